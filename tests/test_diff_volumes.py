"""The diff's compact store of the earlier run's volumes behaves as a dict keyed by ARN would:
each volume's state comes back once, in any order, and nothing else does (property tests)."""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from fleetscan._audit._diff import _pack, _point_ms, _point_text, _unpack, _Volumes
from fleetscan._records import format_time

ARNS = st.lists(
    st.text(alphabet="abcdef0123456789/:-", min_size=1, max_size=40), unique=True, max_size=60
)


@given(ARNS, st.data())
def test_volumes_answer_like_a_dict(arns: list[str], data: st.DataObject) -> None:
    states = {arn: data.draw(st.integers(0, 2**50)) for arn in arns}
    volumes = _Volumes()
    for arn, state in states.items():
        volumes.add(arn, state)
    assert volumes.freeze() == len(states)
    asked = data.draw(st.permutations(arns))
    strangers = data.draw(st.lists(st.text(min_size=1, max_size=5).map(lambda t: "x" + t)))
    for arn in asked[: len(asked) // 2]:
        assert volumes.pop(arn) == states[arn]
        assert volumes.pop(arn) is None  # once only
    for stranger in strangers:
        if stranger not in states:
            assert volumes.pop(stranger) is None
    assert volumes.left == len(asked) - len(asked) // 2
    for arn in asked[len(asked) // 2 :]:
        assert volumes.pop(arn) == states[arn]
    assert volumes.left == 0


@given(
    st.datetimes(
        min_value=dt.datetime(1, 1, 1),
        max_value=dt.datetime(9999, 12, 31),
        timezones=st.just(dt.UTC),
    ),
    st.booleans(),
    st.booleans(),
)
def test_a_recovery_point_and_its_flags_round_trip(
    when: dt.datetime, scanned: bool, stale: bool
) -> None:
    text = format_time(when)
    packed = _pack(_point_ms(text), scanned, stale)
    assert packed < 2**64  # fits the array's unsigned 64-bit items
    point, was_scanned, was_stale = _unpack(packed)
    assert (_point_text(point), was_scanned, was_stale) == (text, scanned, stale)


def test_no_recovery_point_is_zero() -> None:
    assert _point_ms(None) == _point_ms("not a time") == 0
    assert _point_text(0) is None
