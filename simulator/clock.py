"""Time on the wire: nanosecond integers, msgpack Timestamps and RFC 3339 strings."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

import msgpack

_NS = 1_000_000_000
_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})"
    r"(?:[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9})\d*)?)?"
    r"(Z|z|[+-]\d{2}:?\d{2})?$"
)


def now_ns() -> int:
    """Wall-clock nanoseconds since the epoch."""
    return time.time_ns()


def to_timestamp(ns: int) -> msgpack.Timestamp:
    """The msgpack Timestamp extension (type -1) for ``ns``, as the data stream sends ``t``."""
    seconds, nanos = divmod(ns, _NS)
    return msgpack.Timestamp(seconds, nanos)


def rfc3339(ns: int) -> str:
    """RFC 3339 in UTC with up to nine fractional digits, trailing zeros trimmed.

    This is Go's ``time.RFC3339Nano`` layout, which Alpaca's services use.
    """
    seconds, nanos = divmod(ns, _NS)
    head = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if not nanos:
        return head + "Z"
    return f"{head}.{nanos:09d}".rstrip("0") + "Z"


def parse_time(text: str) -> int:
    """Nanoseconds since the epoch for an RFC 3339 timestamp or a bare date (UTC midnight).

    Accepts ``Z`` or a numeric offset and any number of fractional digits (beyond nine are
    ignored). Raises ValueError for anything else.
    """
    match = _RFC3339.match(text.strip())
    if not match:
        raise ValueError(f"not an RFC 3339 timestamp: {text!r}")
    year, month, day, hour, minute, second, frac, zone = match.groups()
    moment = datetime(
        int(year),
        int(month),
        int(day),
        int(hour or 0),
        int(minute or 0),
        int(second or 0),
        tzinfo=UTC,
    )
    offset = 0
    if zone and zone not in ("Z", "z"):
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        offset = sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    nanos = int((frac or "").ljust(9, "0")) if frac else 0
    return (int(moment.timestamp()) - offset) * _NS + nanos


class MarketClock:
    """The market's clock, shared by every stream and the REST API: the wall clock by
    default; ``speed`` > 1 runs it faster from the moment it was made (tests, demos)."""

    def __init__(self, speed: float = 1.0) -> None:
        if speed <= 0:
            raise ValueError("clock speed must be positive")
        self.speed = speed
        self._epoch_ns = time.time_ns()
        self._mono0 = time.monotonic_ns()
        self._last_ns = 0

    def now_ns(self) -> int:
        """Market nanoseconds since the epoch, strictly increasing."""
        if self.speed == 1.0:
            now = time.time_ns()
        else:
            now = self._epoch_ns + int((time.monotonic_ns() - self._mono0) * self.speed)
        self._last_ns = max(now, self._last_ns + 1)
        return self._last_ns

    def reserve(self, count: int) -> int:
        """The first of ``count`` consecutive timestamps, all taken from now."""
        base = self.now_ns()
        self._last_ns = base + max(count - 1, 0)
        return base
