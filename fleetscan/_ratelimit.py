"""Adaptive rate limiting per (account, region): the scope at which Storage Gateway throttles.

Each bucket is a GCRA token bucket (rate, burst). A throttle answer cuts the bucket's rate and
makes it strict (burst 1) for every task sharing it, and pauses it for one interval; quiet time
then raises the rate back towards the configured one, a little per second, and the burst with
it. Multiplicative decrease, additive increase: the same shape TCP uses to share a link, so a
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
    #: Multiplicative decrease on a throttle.
    DECREASE = 0.7
    #: Additive increase: fraction of the configured rate regained per quiet second.
    RECOVERY_PER_SECOND = 0.25
    #: Recovery starts this long after the last throttle.
    QUIET_SECONDS = 0.5

    __slots__ = (
        "_last_throttle",
        "_last_update",
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
        self._tat = 0.0  # theoretical arrival time of the next request
        self._last_throttle = float("-inf")
        self._last_update = 0.0

    async def acquire(self) -> None:
        """Wait for this request's slot. Slots are reserved before sleeping, so waiters queue."""
        now = _clock()
        self._recover(now)
        interval = 1.0 / self.rate
        tat = max(self._tat, now)
        wait = tat - (self.burst - 1) * interval - now
        self._tat = tat + interval
        if wait > 0:
            await anyio.sleep(wait)

    def on_throttle(self) -> None:
        now = _clock()
        self.throttles += 1
        # Calls in flight together fail together: one decrease per interval is enough.
        if now - self._last_throttle > 1.0 / self.rate:
            self.rate = max(self.MIN_RATE, self.rate * self.DECREASE)
            self.burst = 1
            # Pause: no slot sooner than one (new) interval from now; slots already reserved
            # stay where they are (moving them earlier would bunch the callers up again).
            self._tat = max(self._tat, now + 1.0 / self.rate)
        self._last_throttle = now
        self._last_update = now

    def _recover(self, now: float) -> None:
        if self.rate < self.max_rate and now - self._last_throttle > self.QUIET_SECONDS:
            regained = self.max_rate * self.RECOVERY_PER_SECOND * (now - self._last_update)
            self.rate = min(self.max_rate, self.rate + regained)
            self.burst = max(
                1, min(self.max_burst, round(self.max_burst * self.rate / self.max_rate))
            )
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
