"""The adaptive per-(account, region) bucket: how it slows down and how it recovers.

The bucket reads the event loop's clock; recovery is checked by handing it explicit times, so no
assertion depends on how fast this machine is.
"""

from __future__ import annotations

import pytest

from fleetscan._ratelimit import AdaptiveBucket, RateLimiter


async def test_a_throttle_cuts_the_rate_and_makes_the_bucket_strict() -> None:
    bucket = AdaptiveBucket(rate=20, burst=20)
    bucket.on_throttle()
    assert bucket.rate == pytest.approx(20 * AdaptiveBucket.DECREASE)
    assert bucket.burst == 1
    # Calls that were in flight together fail together: that is one decrease, not many.
    for _ in range(10):
        bucket.on_throttle()
    assert bucket.rate == pytest.approx(20 * AdaptiveBucket.DECREASE)
    assert bucket.throttles == 11


async def test_repeated_throttles_floor_at_the_minimum_rate() -> None:
    bucket = AdaptiveBucket(rate=20, burst=5)
    for _ in range(40):
        bucket._last_throttle = float("-inf")  # each throttle in a new interval
        bucket.on_throttle()
    assert bucket.rate == AdaptiveBucket.MIN_RATE


async def test_recovery_is_gradual_and_waits_for_quiet() -> None:
    bucket = AdaptiveBucket(rate=20, burst=20)
    bucket.on_throttle()
    low = bucket.rate
    now = bucket._last_throttle
    bucket._recover(now + AdaptiveBucket.QUIET_SECONDS / 2)  # not yet quiet for long enough
    assert bucket.rate == low
    bucket._recover(now + AdaptiveBucket.QUIET_SECONDS + 0.5)
    assert low < bucket.rate < 20
    assert 1 <= bucket.burst < 20
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


def test_buckets_are_shared_per_unit_and_released() -> None:
    limiter = RateLimiter(rate=10, burst=2)
    a = limiter.bucket(("111122223333", "us-east-1"))
    assert limiter.bucket(("111122223333", "us-east-1")) is a
    assert limiter.bucket(("111122223333", "eu-west-1")) is not a
    limiter.release(("111122223333", "us-east-1"))
    assert limiter.bucket(("111122223333", "us-east-1")) is not a
