"""Exact nanosecond timestamps: integers since the epoch <-> RFC 3339, without floats.

The event format is ``YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`` (UTC, exactly nine fractional digits).
Parsing accepts any RFC 3339 date-time (fraction of any length, ``Z`` or a numeric offset).
The supported range is 1970-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z, so that every
``ts_ns`` is a non-negative integer and every formatted timestamp has a four-digit year.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Final

from msgpack import Timestamp

from alpaca_broker.errors import MalformedMessage

NS_PER_SECOND: Final = 1_000_000_000
_SECONDS_PER_DAY: Final = 86_400


def days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    year -= month <= 2
    era = year // 400
    yoe = year - era * 400
    doy = (153 * (month - 3 if month > 2 else month + 9) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146_097 + doe - 719_468


def civil_from_days(days: int) -> tuple[int, int, int]:
    """The (year, month, day) of ``days`` since 1970-01-01 (inverse of days_from_civil)."""
    days += 719_468
    era = days // 146_097
    doe = days - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (month <= 2), month, day


MIN_NS: Final = 0
MAX_NS: Final = (days_from_civil(9999, 12, 31) + 1) * _SECONDS_PER_DAY * NS_PER_SECOND - 1


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


_DAYS_IN_MONTH: Final = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


@lru_cache(maxsize=4096)
def _second_prefix(seconds: int) -> str:
    # Events of one batch share a handful of seconds: the calendar math runs once per second.
    days, rem = divmod(seconds, _SECONDS_PER_DAY)
    year, month, day = civil_from_days(days)
    hour, rem = divmod(rem, 3600)
    minute, second = divmod(rem, 60)
    return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}."


def format_ns(ns: int) -> str:
    """``ns`` since the epoch as RFC 3339 UTC with nine fractional digits and ``Z``.

    Raises ValueError outside the supported range.
    """
    if not MIN_NS <= ns <= MAX_NS:
        raise ValueError(f"timestamp out of range: {ns}")
    seconds, fraction = divmod(ns, NS_PER_SECOND)
    return f"{_second_prefix(seconds)}{fraction:09d}Z"


def _digits(text: str, start: int, end: int) -> int:
    part = text[start:end]
    if not part.isdigit():
        raise ValueError(f"not an RFC 3339 timestamp: {text!r}")
    return int(part)


def parse_rfc3339(text: str) -> int:
    """Nanoseconds since the epoch of an RFC 3339 date-time, exactly.

    Fractions longer than nine digits are truncated to nanoseconds. Raises ValueError on
    anything that is not a valid RFC 3339 date-time in the supported range.
    """
    size = len(text)
    if (
        size < 20
        or not text.isascii()
        or text[4] != "-"
        or text[7] != "-"
        or text[10] not in "Tt"
        or text[13] != ":"
        or text[16] != ":"
    ):
        raise ValueError(f"not an RFC 3339 timestamp: {text!r}")
    if text[-1] in "Zz":
        zone_at = size - 1
        offset = 0
    elif size >= 25 and text[size - 6] in "+-" and text[size - 3] == ":":
        zone_at = size - 6
        off_hour = _digits(text, size - 5, size - 3)
        off_minute = _digits(text, size - 2, size)
        if off_hour > 23 or off_minute > 59:
            raise ValueError(f"bad UTC offset: {text!r}")
        offset = off_hour * 3600 + off_minute * 60
        if text[zone_at] == "-":
            offset = -offset
    else:
        raise ValueError(f"no time zone in timestamp: {text!r}")
    fraction = 0
    if zone_at != 19:
        digits = text[20:zone_at]
        if text[19] != "." or not digits.isdigit():
            raise ValueError(f"bad fraction in timestamp: {text!r}")
        fraction = int(digits[:9].ljust(9, "0"))
    year = _digits(text, 0, 4)
    month = _digits(text, 5, 7)
    day = _digits(text, 8, 10)
    hour = _digits(text, 11, 13)
    minute = _digits(text, 14, 16)
    second = _digits(text, 17, 19)
    if not 1 <= month <= 12 or hour > 23 or minute > 59 or second > 59:
        raise ValueError(f"field out of range in timestamp: {text!r}")
    month_days = 29 if month == 2 and _is_leap(year) else _DAYS_IN_MONTH[month]
    if not 1 <= day <= month_days:
        raise ValueError(f"day out of range in timestamp: {text!r}")
    seconds = (
        days_from_civil(year, month, day) * _SECONDS_PER_DAY
        + hour * 3600
        + minute * 60
        + second
        - offset
    )
    ns = seconds * NS_PER_SECOND + fraction
    if not MIN_NS <= ns <= MAX_NS:
        raise ValueError(f"timestamp out of range: {text!r}")
    return ns


def format_received(value: object) -> str:
    """The RFC 3339 form of a receive time given in ns (an int); ValueError otherwise."""
    if type(value) is not int:
        raise ValueError(f"receive time is not an int of ns: {type(value).__name__}")
    return _format_received(value)


@lru_cache(maxsize=64)
def _format_received(ns: int) -> str:
    # Every message of a frame shares the frame's receive time: formatted once per frame
    # (a cache hit costs about a tenth of a format).
    return format_ns(ns)


def to_ns(value: object) -> int:
    """Nanoseconds since the epoch of an int (already ns), RFC 3339 string or msgpack Timestamp.

    Raises ValueError for any other type or an out-of-range value.
    """
    if type(value) is int:
        ns = value
    elif isinstance(value, str):
        return parse_rfc3339(value)
    elif isinstance(value, Timestamp):
        ns = value.seconds * NS_PER_SECOND + value.nanoseconds
    else:
        raise ValueError(f"unsupported timestamp type {type(value).__name__}")
    if not MIN_NS <= ns <= MAX_NS:
        raise ValueError(f"timestamp out of range: {ns}")
    return ns


def event_times(
    ts: object, received_at_ns: object, raw: Any, what: str = ""
) -> tuple[int, str, str]:
    """An event's ``ts_ns``, ``timestamp`` and ``received_at`` from its message time ``ts``
    and its receive time in ns; raises MalformedMessage (reason ``{what}bad timestamp`` or
    ``{what}bad received_at``, ``raw`` attached) naming whichever is bad."""
    try:
        ts_ns = to_ns(ts)
        timestamp = format_ns(ts_ns)
    except ValueError as exc:
        raise MalformedMessage(f"{what}bad timestamp", str(exc), raw) from None
    try:
        received_at = format_received(received_at_ns)
    except ValueError as exc:
        raise MalformedMessage(f"{what}bad received_at", str(exc), raw) from None
    return ts_ns, timestamp, received_at
