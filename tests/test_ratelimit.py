"""The adaptive per-(account, region) bucket: how it slows down and how it recovers.

The bucket reads the event loop's clock; recovery is checked by handing it explicit times, so no
assertion depends on how fast this machine is.
"""

from __future__ import annotations

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


def test_buckets_are_shared_per_unit_and_released() -> None:
    limiter = RateLimiter(rate=10, burst=2)
    a = limiter.bucket(("111122223333", "us-east-1"))
    assert limiter.bucket(("111122223333", "us-east-1")) is a
    assert limiter.bucket(("111122223333", "eu-west-1")) is not a
    limiter.release(("111122223333", "us-east-1"))
    assert limiter.bucket(("111122223333", "us-east-1")) is not a
