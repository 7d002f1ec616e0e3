"""Adaptive rate limiting per (account, region): the scope at which Storage Gateway throttles.

Each bucket is a GCRA token bucket (rate, burst). AWS does not publish Storage Gateway's request
rate, so without a ceiling (``--rate`` unset) a bucket starts at a conservative rate and probes
upward while no throttle comes back; with one, it never goes above it. Either way it backs off on
throttles.

The rate follows CUBIC (RFC 9438; the curve of botocore's adaptive retry mode, with its constants,
``botocore/retries/throttling.py``): after a cut from a rate W it climbs back fast, slows down as
it nears W, holds there, then grows ever faster beyond W while no throttle comes. So a bucket
spends its time just under the rate that was last throttled, and finds a higher one if the
service has raised it. Its clock runs only while callers wait for the bucket's slots: a bucket
whose unit sends less than its rate learns nothing about the service's, and must not come back
from a quiet spell at a rate nobody has tried.

A throttle first makes the bucket strict (burst 1) for every task sharing it, pauses it for one
interval and stops the probe where it is: calls sent together can arrive closer than they left
(network jitter), and a server's bucket may hold fewer calls than this one's burst. Only a
throttle of a call admitted *after* that, at an even pace, cuts the rate (x0.7). So a throttle
costs little: a few calls sent again, not a rate that collapses. Quiet time then regrows the
burst, a little per second.

Each bucket learns for itself. New buckets starting from what the run's others had found was
measured and did not pay (``benchmarks/README.md``): the units with calls enough to probe are
few, and they start together.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque

#: The buckets' clock, read directly: every call of a scan asks its bucket, and anyio's
#: ``current_time()`` looks the backend up every time. (asyncio's ``loop.time()`` is this clock;
#: uvloop's is not quite: timers are set as delays from it.)
_clock = time.monotonic

#: The rate (requests/s) a run without a ceiling starts at: the fixed rate fleetscan used until
#: 2026-12, a conservative guess for a service whose rate is not published.
START_RATE = 20.0


class AdaptiveBucket:
    """A token bucket whose rate probes upward (up to ``ceiling``) and drops on throttling."""

    #: Lowest rate a throttled bucket falls to (requests/s).
    MIN_RATE = 0.5
    #: Multiplicative decrease on a throttle of a call admitted once the bucket was strict
    #: (CUBIC's beta, botocore's too).
    DECREASE = 0.7
    #: CUBIC's C (requests/s per second cubed, botocore's): from a held rate W the probe is
    #: W + 0.4 t^3 after t busy seconds: +0.4/s after 1 s, +3.2/s after 2 s, +10.8/s after 3 s.
    SCALE = 0.4
    #: Fraction of the configured burst regained per quiet second.
    RECOVERY_PER_SECOND = 0.25
    #: The burst regrows this long after the last throttle.
    QUIET_SECONDS = 0.5

    __slots__ = (
        "_burst_level",
        "_k",
        "_last_throttle",
        "_last_update",
        "_probe",
        "_slowed_at",
        "_tat",
        "_timer",
        "_w_max",
        "_waiters",
        "burst",
        "ceiling",
        "max_burst",
        "rate",
        "throttles",
    )

    def __init__(self, rate: float, burst: int, ceiling: float | None = None) -> None:
        self.ceiling = ceiling
        self.rate = rate if ceiling is None else min(rate, ceiling)
        self.max_burst = burst
        self.burst = burst
        self.throttles = 0
        self._burst_level = float(burst)  # regrows by fractions; ``burst`` is its whole part
        self._tat = 0.0  # theoretical arrival time of the next request
        self._waiters: deque[asyncio.Future[float]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._last_throttle = float("-inf")
        self._slowed_at = float("-inf")
        self._last_update = _clock()
        # CUBIC: the rate is _w_max + SCALE * (_probe - _k) ** 3, _probe the busy seconds since
        # the last throttle that changed the rate (or since the start, where _w_max = rate).
        self._w_max = self.rate
        self._k = 0.0
        self._probe = 0.0

    async def acquire(self) -> float:
        """Wait for this request's slot; return when it was granted (this module's clock).

        Callers wait in line, first come first served, and the time of each one's slot is set
        only when the one before it has gone, at the rate of that moment: a cut (or a raise)
        applies to the very next call. (Reserving slots ahead, as this bucket did until 2026-12,
        left a unit's ~1.5 s of waiting calls going out at the old pace after a throttle: a
        probing bucket overshot the service's rate threefold and was throttled 20 times.)
        """
        now = _clock()
        if not self._waiters and self.take(now):
            return now
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[float] = loop.create_future()
        self._waiters.append(waiter)
        if self._timer is None:
            self._schedule(loop, now)
        return await waiter

    def take(self, now: float) -> bool:
        """Take a slot if one is free at ``now`` (no waiting in line: :meth:`acquire` does)."""
        self._update(now)
        tat = max(self._tat, now)
        if tat - (self.burst - 1) / self.rate > now:
            return False
        self._tat = tat + 1.0 / self.rate
        return True

    def next_slot(self, now: float) -> float:
        """When the next slot is free, at the current rate (``now`` or later): the time at
        which :meth:`take` succeeds, computed the same way to the last bit."""
        self._update(now)
        return max(now, max(self._tat, now) - (self.burst - 1) / self.rate)

    def _schedule(self, loop: asyncio.AbstractEventLoop, now: float) -> None:
        # A delay, not loop.call_at: uvloop's loop.time() is not this module's clock.
        due = self.next_slot(now)
        self._timer = loop.call_later(due - now, self._release, loop, due)

    def _release(self, loop: asyncio.AbstractEventLoop, due: float) -> None:
        """The timer of the first waiter's slot: let out every waiter whose slot has come.

        The first slot is taken as of ``due``, the time it was set for, however late a busy
        loop ran the timer: timed from when the timer ran, each wake-up's delay would be added
        to the schedule of a strict bucket (burst 1), which has no burst to absorb it.
        """
        self._timer = None
        # A loop may also run a timer a hair early (its clock's resolution): it is due.
        now = max(_clock(), due)
        at = due
        waiters = self._waiters
        while waiters:
            head = waiters[0]
            if head.done():  # its caller was cancelled while waiting
                waiters.popleft()
            elif self.take(at):
                waiters.popleft()
                head.set_result(at)
                at = now
            else:
                self._schedule(loop, now)
                break

    def on_throttle(self, admitted_at: float) -> None:
        """A call whose slot was granted at ``admitted_at`` (:meth:`acquire`'s answer) was
        throttled.

        Only a call admitted after the bucket last slowed down says something about its new
        pace. Calls admitted before it (in flight when the first throttle came back) fail
        together and count as the one signal they are. (Counting every throttle cut a bucket
        to its minimum rate within a few hundred milliseconds, and made the fault soak 5x
        slower.)
        """
        now = _clock()
        self._update(now)
        self.throttles += 1
        self._last_throttle = now
        if admitted_at < self._slowed_at:
            return
        self._slowed_at = now
        rate = self.rate
        if self.burst > 1:
            # First stop bunching; the rate may well be fine, but probe no higher for now.
            self.burst = 1
            self._burst_level = 1.0
            self._w_max, self._k = rate, 0.0
        else:
            # CUBIC's fast convergence: throttled below the last rate that was, the limit has
            # come down (or that rate overshot it): aim lower than where this throttle came.
            self._w_max = rate * (1 + self.DECREASE) / 2 if rate < self._w_max else rate
            self.rate = max(self.MIN_RATE, rate * self.DECREASE)
            # Busy seconds until the curve is back at _w_max.
            self._k = math.cbrt(max(self._w_max - self.rate, 0.0) / self.SCALE)
        self._probe = 0.0
        # Pause: no slot sooner than one (new) interval from now.
        self._tat = max(self._tat, now + 1.0 / self.rate)

    def _update(self, now: float) -> None:
        """Advance the probe by the time callers waited for slots since the last update, and
        regrow the burst after a quiet spell."""
        last = self._last_update
        if now <= last:
            return
        # With callers in line, or until ``booked`` (when the next caller would have had to
        # wait), the bucket was the limit.
        if self._waiters:
            busy = now - last
        else:
            busy = min(now, self._tat - (self.burst - 1) / self.rate) - last
        if busy > 0:
            self._probe += busy
            t = self._probe - self._k
            rate = max(self.MIN_RATE, self._w_max + self.SCALE * t * t * t)
            ceiling = self.ceiling
            self.rate = rate if ceiling is None or rate < ceiling else ceiling
        if self.burst < self.max_burst and now - self._last_throttle > self.QUIET_SECONDS:
            step = self.RECOVERY_PER_SECOND * (now - max(last, self._last_throttle))
            self._burst_level = min(self.max_burst, self._burst_level + self.max_burst * step)
            self.burst = int(self._burst_level)
        self._last_update = now


class RateLimiter:
    """One :class:`AdaptiveBucket` per key, created on first use and dropped when released.

    ``rate`` is a ceiling no bucket exceeds (each starts there); None lets buckets probe for the
    service's rate, starting at :data:`START_RATE`.
    """

    def __init__(self, rate: float | None, burst: int) -> None:
        self.ceiling = rate
        self.start_rate = START_RATE if rate is None else rate
        self.burst = burst
        self._buckets: dict[tuple[str, str], AdaptiveBucket] = {}

    def bucket(self, key: tuple[str, str]) -> AdaptiveBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = AdaptiveBucket(self.start_rate, self.burst, self.ceiling)
            self._buckets[key] = bucket
        return bucket

    def release(self, key: tuple[str, str]) -> None:
        """Forget a finished (account, region) so memory does not grow with the fleet."""
        self._buckets.pop(key, None)
