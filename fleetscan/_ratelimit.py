"""Adaptive rate limiting per (account, region): the scope at which Storage Gateway throttles.

Each bucket is a GCRA token bucket (rate, burst). A throttle answer first makes the bucket strict
(burst 1) for every task sharing it, and pauses it for one interval: calls sent together can
arrive closer than they left (network jitter), and a server's bucket may hold fewer calls than
this one's burst. Only a throttle of a call admitted *after* that, at an even pace, cuts the rate.
Quiet time then raises the rate and the burst back towards the configured ones, a little per
second. Multiplicative decrease, additive increase: the same shape TCP uses to share a link, so a
throttling storm is absorbed instead of being answered with more calls.
"""

from __future__ import annotations

import time

import anyio

#: asyncio's event loop clock (``loop.time()`` is ``time.monotonic()``), read directly: every call
#: of a scan asks its bucket, and anyio's ``current_time()`` looks the backend up every time.
_clock = time.monotonic


class AdaptiveBucket:
    """A token bucket whose rate drops on throttling and recovers gradually."""

    #: Lowest rate a throttled bucket falls to (requests/s).
    MIN_RATE = 0.5
    #: Multiplicative decrease on a throttle (of a call admitted once the bucket was strict).
    DECREASE = 0.7
    #: Additive increase: fraction of the configured rate and burst regained per quiet second.
    RECOVERY_PER_SECOND = 0.25
    #: Recovery starts this long after the last throttle.
    QUIET_SECONDS = 0.5

    __slots__ = (
        "_burst_level",
        "_last_throttle",
        "_last_update",
        "_slowed_at",
        "_tat",
        "burst",
        "max_burst",
        "max_rate",
        "rate",
        "throttles",
    )

    def __init__(self, rate: float, burst: int) -> None:
        self.max_rate = rate
        self.max_burst = burst
        self.rate = rate
        self.burst = burst
        self.throttles = 0
        self._burst_level = float(burst)  # regrows by fractions; ``burst`` is its whole part
        self._tat = 0.0  # theoretical arrival time of the next request
        self._last_throttle = float("-inf")
        self._slowed_at = float("-inf")
        self._last_update = 0.0

    async def acquire(self) -> float:
        """Wait for this request's slot; return when it was reserved (this module's clock).

        Slots are reserved before sleeping, so waiters queue.
        """
        now = _clock()
        self._recover(now)
        interval = 1.0 / self.rate
        tat = max(self._tat, now)
        wait = tat - (self.burst - 1) * interval - now
        self._tat = tat + interval
        if wait > 0:
            await anyio.sleep(wait)
        return now

    def on_throttle(self, admitted_at: float) -> None:
        """A call whose slot was reserved at ``admitted_at`` (:meth:`acquire`'s answer) was
        throttled.

        Only a call admitted after the bucket last slowed down says something about its new
        pace. Calls admitted before it fail together and count as the one signal they are, even
        those still waiting for their slot then and sent later: their pacing is the old one.
        (Counting those by the time they were *sent* cut a bucket to its minimum rate within a
        few hundred milliseconds, and made the fault soak 5x slower.)
        """
        now = _clock()
        self.throttles += 1
        self._last_throttle = now
        self._last_update = now
        if admitted_at < self._slowed_at:
            return
        self._slowed_at = now
        if self.burst > 1:
            self.burst = 1  # first stop bunching; the rate may well be fine
            self._burst_level = 1.0
        else:
            self.rate = max(self.MIN_RATE, self.rate * self.DECREASE)
        # Pause: no slot sooner than one (new) interval from now; slots already reserved stay
        # where they are (moving them earlier would bunch the callers up again).
        self._tat = max(self._tat, now + 1.0 / self.rate)

    def _recover(self, now: float) -> None:
        if now - self._last_throttle > self.QUIET_SECONDS:
            step = self.RECOVERY_PER_SECOND * (now - self._last_update)
            if self.rate < self.max_rate:
                self.rate = min(self.max_rate, self.rate + self.max_rate * step)
            if self.burst < self.max_burst:
                self._burst_level = min(self.max_burst, self._burst_level + self.max_burst * step)
                self.burst = int(self._burst_level)
        self._last_update = now


class RateLimiter:
    """One :class:`AdaptiveBucket` per key, created on first use and dropped when released."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[tuple[str, str], AdaptiveBucket] = {}

    def bucket(self, key: tuple[str, str]) -> AdaptiveBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = AdaptiveBucket(self.rate, self.burst)
        return bucket

    def release(self, key: tuple[str, str]) -> None:
        """Forget a finished (account, region) so memory does not grow with the fleet."""
        self._buckets.pop(key, None)
