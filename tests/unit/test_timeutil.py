"""Integer nanoseconds and datetimes, both ways, with no float in between."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from schemas.timeutil import datetime_of, datetime_or_none, ns_of


@given(st.integers(min_value=0, max_value=4_102_444_800 * 10**9))  # up to 2100
def test_a_datetime_of_nanoseconds_is_exact_to_the_microsecond(ns: int) -> None:
    moment = datetime_of(ns)
    assert moment.tzinfo is UTC
    assert ns_of(moment) == ns // 1000 * 1000  # floored, never rounded up


def test_where_a_float_of_seconds_would_round_a_microsecond_up() -> None:
    ns = 1_765_000_000_123_456_999  # .123456999 s: a float gives .123457
    assert datetime.fromtimestamp(ns / 1e9, UTC).microsecond == 123457
    assert datetime_of(ns).microsecond == 123456
    assert datetime_or_none(None) is None
