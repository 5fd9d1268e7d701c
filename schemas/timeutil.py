"""Exact conversions between datetimes and integer nanoseconds (floats lose ~100 ns near now)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
NS = 1_000_000_000  # nanoseconds in a second
_US = timedelta(microseconds=1)


def ns_of(moment: datetime) -> int:
    """Nanoseconds since the Unix epoch of an aware datetime, exactly (to its microsecond)."""
    return (moment - EPOCH) // _US * 1000


def ns_of_seconds(seconds: float) -> int:
    """Nanoseconds of a number of seconds, rounded to the microsecond a float can still carry."""
    return round(seconds * 1e6) * 1000


def datetime_of(ns: int) -> datetime:
    """The aware UTC datetime of integer nanoseconds, exactly to the microsecond (floored), with
    no float in between (a float of seconds loses about 0.1 µs near now, and can round a
    microsecond up)."""
    return EPOCH + timedelta(microseconds=ns // 1000)


def datetime_or_none(ns: int | None) -> datetime | None:
    return None if ns is None else datetime_of(ns)
