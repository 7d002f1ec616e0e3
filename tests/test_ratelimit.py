"""The adaptive per-(account, region) bucket: how it slows down and how it recovers.

The bucket reads the event loop's clock; recovery is checked by handing it explicit times, so no
assertion depends on how fast this machine is.
"""

from __future__ import annotations

import anyio
import pytest

from fleetscan._ratelimit import AdaptiveBucket, RateLimiter, _clock


async def test_a_first_throttle_makes_the_bucket_strict_and_a_second_cuts_the_rate() -> None:
    bucket = AdaptiveBucket(rate=20, burst=10)
    admitted = _clock()
    bucket.on_throttle(admitted)
    # Calls sent together may have arrived bunched: first stop bunching, keep the rate.
    assert (bucket.rate, bucket.burst) == (20, 1)
    # Calls that were in flight together fail together: one signal, not many.
    for _ in range(10):
        bucket.on_throttle(admitted)
    assert (bucket.rate, bucket.burst) == (20, 1)
    # A call admitted at the strict pace and throttled too: now the rate is too high.
    bucket.on_throttle(_clock())
    assert bucket.rate == pytest.approx(20 * AdaptiveBucket.DECREASE)
    assert bucket.throttles == 12


async def test_a_throttle_pauses_the_bucket_for_one_interval() -> None:
    bucket = AdaptiveBucket(rate=10, burst=5)
    before = _clock()
    bucket.on_throttle(before)
    # The next slot is at least one interval after the throttle, whatever the burst was.
    assert bucket._tat >= before + 1 / 10


async def test_repeated_throttles_floor_at_the_minimum_rate() -> None:
    bucket = AdaptiveBucket(rate=20, burst=5)
    for _ in range(40):
        bucket.on_throttle(_clock())  # each of a call admitted after the last slow-down
    assert bucket.rate == AdaptiveBucket.MIN_RATE
    assert bucket.burst == 1


async def test_recovery_is_gradual_and_waits_for_quiet() -> None:
    bucket = AdaptiveBucket(rate=20, burst=20)
    bucket.on_throttle(_clock())
    bucket.on_throttle(_clock())
    low = bucket.rate
    assert low == pytest.approx(20 * AdaptiveBucket.DECREASE)
    assert bucket.burst == 1
    now = bucket._last_throttle
    bucket._recover(now + AdaptiveBucket.QUIET_SECONDS / 2)  # not yet quiet for long enough
    assert (bucket.rate, bucket.burst) == (low, 1)
    bucket._recover(now + AdaptiveBucket.QUIET_SECONDS + 0.5)
    assert low < bucket.rate < 20
    assert 1 < bucket.burst < 20
    bucket._recover(now + AdaptiveBucket.QUIET_SECONDS + 1 / AdaptiveBucket.RECOVERY_PER_SECOND)
    assert bucket.rate == 20
    assert bucket.burst == 20


async def test_slots_are_reserved_in_order_at_the_rate() -> None:
    bucket = AdaptiveBucket(rate=50, burst=1)
    start = bucket._tat
    for _ in range(5):
        await bucket.acquire()
    # Five slots reserved, one interval apart, whatever the wall clock did meanwhile.
    assert bucket._tat - max(start, 0) >= 4 / 50


async def test_calls_admitted_before_a_slow_down_count_once_even_when_sent_after_it() -> None:
    """Through acquire() itself: calls that reserved their slots before a throttle, and so are
    sent after it at the old pace, are the same signal as the first throttle. Counting them by
    when they were sent cut a bucket to its minimum within a few hundred milliseconds (the fault
    soak took 5x longer)."""
    bucket = AdaptiveBucket(rate=50, burst=2)
    first = await bucket.acquire()
    await bucket.acquire()  # the burst is spent: every call below waits for its slot
    admitted: list[float] = []

    async def queued_call() -> None:
        admitted.append(await bucket.acquire())  # reserves now, is sent when its slot comes
        bucket.on_throttle(admitted[-1])  # ... and is throttled, like the first

    async with anyio.create_task_group() as tg:
        for _ in range(6):
            tg.start_soon(queued_call)
        await anyio.wait_all_tasks_blocked()  # every slot reserved; most wait for it
        bucket.on_throttle(first)  # the first call's throttle arrives
        assert (bucket.rate, bucket.burst) == (50, 1)
    # All six were sent after the slow-down and throttled: still one signal.
    assert len(admitted) == 6
    assert (bucket.rate, bucket.burst) == (50, 1)
    assert bucket.throttles == 7
    # A call admitted at the strict pace and throttled: now the rate was too high.
    late = await bucket.acquire()
    bucket.on_throttle(late)
    assert bucket.rate == pytest.approx(50 * AdaptiveBucket.DECREASE)


def test_buckets_are_shared_per_unit_and_released() -> None:
    limiter = RateLimiter(rate=10, burst=2)
    a = limiter.bucket(("111122223333", "us-east-1"))
    assert limiter.bucket(("111122223333", "us-east-1")) is a
    assert limiter.bucket(("111122223333", "eu-west-1")) is not a
    limiter.release(("111122223333", "us-east-1"))
    assert limiter.bucket(("111122223333", "us-east-1")) is not a
