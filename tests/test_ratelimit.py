"""The adaptive per-(account, region) bucket: how it probes, slows down, recovers and queues.

Most tests drive the bucket with a controlled clock (``fleetscan._ratelimit._clock`` is
replaced) and a caller that always waits for the next slot, against a simulated service token
bucket where one is needed: no assertion depends on how fast this machine is. The last tests run
the real waiting line on the event loop and assert only orders and lower bounds of the bucket's
own schedule.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field

import anyio
import pytest

import fleetscan._ratelimit
from fleetscan._ratelimit import START_RATE, AdaptiveBucket, RateLimiter

KEY = ("111122223333", "us-east-1")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(fleetscan._ratelimit, "_clock", fake)
    return fake


@dataclass
class Service:
    """A service's token bucket (the emulator's kind): ``rate`` per second, ``burst`` at once."""

    rate: float
    burst: int
    tokens: float = field(init=False)
    last: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        self.tokens = float(self.burst)

    def admits(self, at: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (at - self.last) * self.rate)
        self.last = at
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


@dataclass
class Run:
    sent: list[float] = field(default_factory=list)
    throttled: list[float] = field(default_factory=list)
    #: (time, rate) after each call.
    rates: list[tuple[float, float]] = field(default_factory=list)

    def sent_between(self, start: float, end: float) -> int:
        return sum(1 for t in self.sent if start <= t < end)


def saturate(
    bucket: AdaptiveBucket, clock: Clock, seconds: float, service: Service | None = None
) -> Run:
    """A caller always in line: each call goes at the bucket's next slot; a throttled one is
    told to the bucket (a throttle comes back at once: the slowest reaction is not the point)."""
    run = Run()
    end = clock.now + seconds
    while True:
        while not bucket.take(clock.now):  # as the bucket's timer does: a slot, or wait again
            clock.now = bucket.next_slot(clock.now)
        if clock.now >= end:
            return run
        run.sent.append(clock.now)
        if service is not None and not service.admits(clock.now):
            run.throttled.append(clock.now)
            bucket.on_throttle(clock.now)
        run.rates.append((clock.now, bucket.rate))


def test_a_run_without_a_ceiling_starts_at_the_conservative_rate() -> None:
    probing = RateLimiter(rate=None, burst=10).bucket(KEY)
    assert (probing.rate, probing.ceiling, probing.burst) == (START_RATE, None, 10)
    assert START_RATE == 20
    capped = RateLimiter(rate=5, burst=3).bucket(KEY)
    assert (capped.rate, capped.ceiling, capped.burst) == (5, 5, 3)


def test_without_throttles_a_busy_bucket_probes_upward(clock: Clock) -> None:
    bucket = RateLimiter(rate=None, burst=10).bucket(KEY)
    start = clock.now
    run = saturate(bucket, clock, 6)
    # The rate rises, ever faster, and the calls really go out faster.
    at = {round(t - start): rate for t, rate in run.rates}
    assert START_RATE < at[2] < at[4] < at[5]
    assert at[5] - at[4] > at[3] - at[2]
    assert run.sent_between(start + 5, start + 6) > START_RATE + 2


def test_an_idle_bucket_learns_nothing_and_does_not_probe(clock: Clock) -> None:
    """A unit sending less than its rate says nothing about the service's: after a minute at
    5 calls/s the bucket still runs at its start rate, not at one nobody has tried."""
    bucket = RateLimiter(rate=None, burst=10).bucket(KEY)
    for _ in range(300):
        clock.now += 0.2
        assert bucket.take(clock.now)
    assert bucket.rate == START_RATE


def test_throttles_cut_the_rate_and_it_settles_at_the_services_rate(clock: Clock) -> None:
    bucket = RateLimiter(rate=None, burst=10).bucket(KEY)
    service = Service(rate=25, burst=10)
    start = clock.now
    run = saturate(bucket, clock, 60, service)
    # It went above 25 (probing), was throttled, and fell back below 25 (a cut).
    rates = [rate for _, rate in run.rates]
    peak = rates.index(max(rates))
    assert max(rates) > 25
    assert min(rates[peak:]) < 25
    # Over the last 40 s it sends at the service's rate, give or take, and few calls are refused.
    sent = run.sent_between(start + 20, start + 60)
    throttled = sum(1 for t in run.throttled if t >= start + 20)
    assert 0.8 * 25 * 40 < sent - throttled <= 25 * 40 + 10
    assert throttled < 0.06 * sent
    assert 1 <= len(run.throttled) < 0.06 * len(run.sent)


def test_a_ceiling_is_never_exceeded(clock: Clock) -> None:
    bucket = RateLimiter(rate=5, burst=3).bucket(KEY)
    start = clock.now
    run = saturate(bucket, clock, 30)
    # Throttled once in a while, as a busy service would: it backs off and recovers, up to 5/s.
    run2 = saturate(bucket, clock, 30, Service(rate=4, burst=3))
    assert run2.throttled
    run3 = saturate(bucket, clock, 30)
    rates = [rate for r in (run, run2, run3) for _, rate in r.rates]
    assert max(rates) == 5
    assert min(rates) < 4
    sent = run.sent + run2.sent + run3.sent
    # No second holds more than the rate plus the burst: 5 x 1 s + 3.
    for t in sent:
        assert sum(1 for u in sent if t <= u < t + 1) <= 5 + 3
    assert sum(1 for t in sent if t >= start + 80) >= 4 * 9  # and it came back to 5/s


def test_a_first_throttle_makes_the_bucket_strict_and_a_second_cuts_the_rate(
    clock: Clock,
) -> None:
    bucket = AdaptiveBucket(rate=20, burst=10, ceiling=20)
    admitted = clock.now
    clock.now += 0.01
    bucket.on_throttle(admitted)
    # Calls sent together may have arrived bunched: first stop bunching, keep the rate.
    assert (bucket.rate, bucket.burst) == (20, 1)
    # Calls that were in flight together fail together: one signal, not many.
    for _ in range(10):
        bucket.on_throttle(admitted)
    assert (bucket.rate, bucket.burst) == (20, 1)
    # A call admitted at the strict pace and throttled too: now the rate is too high.
    clock.now += 0.1
    assert bucket.take(clock.now)
    bucket.on_throttle(clock.now)
    assert bucket.rate == pytest.approx(20 * AdaptiveBucket.DECREASE)
    assert bucket.throttles == 12


def test_a_throttle_pauses_the_bucket_for_one_interval(clock: Clock) -> None:
    bucket = AdaptiveBucket(rate=10, burst=5)
    bucket.on_throttle(clock.now)
    # The next slot is at least one interval after the throttle, whatever the burst was.
    assert bucket.next_slot(clock.now) >= clock.now + 1 / 10
    assert not bucket.take(clock.now)


def test_repeated_throttles_floor_at_the_minimum_rate(clock: Clock) -> None:
    bucket = AdaptiveBucket(rate=20, burst=5)
    for _ in range(40):
        clock.now += 0.01
        bucket.on_throttle(clock.now)  # each of a call admitted after the last slow-down
    assert bucket.rate == AdaptiveBucket.MIN_RATE
    assert bucket.burst == 1


def test_after_a_cut_the_rate_climbs_back_and_the_burst_waits_for_quiet(clock: Clock) -> None:
    bucket = AdaptiveBucket(rate=20, burst=20, ceiling=20)
    bucket.on_throttle(clock.now)
    clock.now += 0.01
    bucket.on_throttle(clock.now)
    low = bucket.rate
    assert low == pytest.approx(20 * AdaptiveBucket.DECREASE)
    assert bucket.burst == 1
    saturate(bucket, clock, AdaptiveBucket.QUIET_SECONDS / 2)  # not yet quiet for long enough
    assert low < bucket.rate < 20
    assert bucket.burst == 1
    saturate(bucket, clock, 1)
    assert 1 < bucket.burst < 20
    saturate(bucket, clock, 1 / AdaptiveBucket.RECOVERY_PER_SECOND + 1)
    assert (bucket.rate, bucket.burst) == (20, 20)


async def test_callers_wait_in_line_and_a_cut_paces_the_calls_already_waiting() -> None:
    """On the event loop: calls waiting for their slot when the bucket slows down go out at the
    new pace, not at the one of when they lined up (reserving slots ahead let a unit's waiting
    calls go out at a probing rate long after the service had throttled it)."""
    bucket = AdaptiveBucket(rate=200, burst=1, ceiling=200)
    granted: list[tuple[int, float]] = []

    async def call(n: int) -> None:
        granted.append((n, await bucket.acquire()))

    first = await bucket.acquire()
    async with anyio.create_task_group() as tg:
        for n in range(6):
            tg.start_soon(call, n)
            await anyio.wait_all_tasks_blocked()  # in this order
        assert granted == []  # every one waits for its slot
        bucket.on_throttle(first)  # strict already (burst 1): the rate is cut
    # Cut to 140/s, and climbing back since (the rate only rises while they wait).
    rate = bucket.rate
    assert 200 * AdaptiveBucket.DECREASE <= rate < 160
    assert [n for n, _ in granted] == list(range(6))
    times = [t for _, t in granted]
    # Each at least one interval of the *new* rate after the one before (1/160 s, where the
    # old pace was 1/200 s; a busy machine can only add to it).
    assert all(b - a >= 1 / rate - 1e-9 for a, b in itertools.pairwise(times))
    # And each was granted after the cut: its throttle would be news.
    assert min(times) >= bucket._slowed_at


async def test_a_late_timer_does_not_push_the_slots_after_it(clock: Clock) -> None:
    """A busy loop runs a bucket's timer late: the slot is still the one it was set for, and
    the next one an interval after it, not an interval after the late wake-up (a strict bucket
    has no burst to absorb the delays, which would add up)."""
    bucket = AdaptiveBucket(rate=10, burst=1, ceiling=10)
    assert bucket.take(clock.now)
    loop = asyncio.get_running_loop()
    waiters: list[asyncio.Future[float]] = [loop.create_future() for _ in range(2)]
    bucket._waiters.extend(waiters)
    due = bucket.next_slot(clock.now)
    assert due == pytest.approx(clock.now + 0.1)
    clock.now = due + 0.04  # the loop ran the timer 40 ms late
    bucket._release(loop, due)
    assert waiters[0].result() == due
    assert not waiters[1].done()
    assert bucket.next_slot(clock.now) == pytest.approx(due + 0.1)
    assert bucket._timer is not None
    bucket._timer.cancel()


async def test_a_caller_cancelled_while_waiting_leaves_the_line() -> None:
    bucket = AdaptiveBucket(rate=100, burst=1, ceiling=100)
    await bucket.acquire()
    done: list[int] = []

    async def call(n: int) -> None:
        await bucket.acquire()
        done.append(n)

    async with anyio.create_task_group() as tg:
        async with anyio.create_task_group() as doomed:
            doomed.start_soon(call, 0)
            await anyio.wait_all_tasks_blocked()  # in line, first
            doomed.cancel_scope.cancel()
        tg.start_soon(call, 1)  # behind a waiter that is gone: it must still get its slot
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(call, 2)
    assert done == [1, 2]


def test_buckets_are_shared_per_unit_and_released() -> None:
    limiter = RateLimiter(rate=10, burst=2)
    a = limiter.bucket(("111122223333", "us-east-1"))
    assert limiter.bucket(("111122223333", "us-east-1")) is a
    assert limiter.bucket(("111122223333", "eu-west-1")) is not a
    limiter.release(("111122223333", "us-east-1"))
    assert limiter.bucket(("111122223333", "us-east-1")) is not a
