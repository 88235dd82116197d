"""Exact nanosecond timestamps: formatting, RFC 3339 parsing, and the three input forms."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta, timezone

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alpaca_broker.timestamps import (
    MAX_NS,
    civil_from_days,
    days_from_civil,
    format_ns,
    format_received,
    parse_rfc3339,
    to_ns,
)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ns_values = st.integers(min_value=0, max_value=MAX_NS)


def oracle_ns(moment: datetime, extra_ns: int = 0) -> int:
    """ns since the epoch computed with datetime's integer timedelta arithmetic."""
    delta = moment - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 10**9 + delta.microseconds * 1000 + extra_ns


def test_format_has_nine_fraction_digits_and_z():
    assert format_ns(0) == "1970-01-01T00:00:00.000000000Z"
    assert format_ns(1_795_530_600_123_456_789) == "2026-11-24T14:30:00.123456789Z"
    assert format_ns(MAX_NS) == "9999-12-31T23:59:59.999999999Z"


def test_format_rejects_out_of_range():
    with pytest.raises(ValueError):
        format_ns(-1)
    with pytest.raises(ValueError):
        format_ns(MAX_NS + 1)


def test_parse_keeps_nanoseconds_exactly():
    assert parse_rfc3339("2026-11-24T14:30:00.123456789Z") == 1_795_530_600_123_456_789
    assert parse_rfc3339("2023-04-06T13:15:42.83540958Z") == 1_680_786_942_835_409_580


def test_parse_epochs_differing_in_the_last_digit_stay_distinct():
    a = parse_rfc3339("2026-11-24T14:30:00.123456788Z")
    b = parse_rfc3339("2026-11-24T14:30:00.123456789Z")
    assert b - a == 1
    assert float(a) == float(b)  # what a double (or a Lua number) would make of them


@pytest.mark.parametrize(
    ("text", "utc"),
    [
        ("2022-04-19T13:45:04.981350886-04:00", "2022-04-19T17:45:04.981350886Z"),
        ("2022-04-19T23:15:04.5+05:30", "2022-04-19T17:45:04.500000000Z"),
        ("2022-04-19t17:45:04z", "2022-04-19T17:45:04.000000000Z"),
        ("2022-04-19T17:45:04+00:00", "2022-04-19T17:45:04.000000000Z"),
        ("2024-02-29T00:00:00-00:30", "2024-02-29T00:30:00.000000000Z"),
        ("2021-02-22T15:51:44.208Z", "2021-02-22T15:51:44.208000000Z"),
        ("2021-02-22T15:51:44.1234567891234Z", "2021-02-22T15:51:44.123456789Z"),
    ],
)
def test_parse_offsets_and_fractions(text, utc):
    assert format_ns(parse_rfc3339(text)) == utc


@pytest.mark.parametrize(
    "text",
    [
        "",
        "2021-02-22",
        "2021-02-22T15:51:44",  # no zone
        "2021-02-22 15:51:44Z",  # space instead of T
        "2021-02-22T15:51:44.Z",  # empty fraction
        "2021-02-22T15:51:44,5Z",
        "2021-02-30T15:51:44Z",
        "2023-02-29T00:00:00Z",
        "2021-13-01T00:00:00Z",
        "2021-02-22T24:00:00Z",
        "2021-02-22T23:60:00Z",
        "2021-02-22T23:59:60Z",  # leap second: not representable
        "2021-02-22T15:51:44+24:00",
        "2021-02-22T15:51:44+0100",
        "2021-02-22T15:51:4\uff14Z",  # a non-ASCII digit
        "+021-02-22T15:51:44Z",
        "1_21-02-22T15:51:44Z",
        "1969-12-31T23:59:59.999999999Z",  # before the supported range
        "1970-01-01T00:30:00+01:00",
        "9999-12-31T23:59:59-01:00",
    ],
)
def test_parse_rejects_non_rfc3339(text):
    with pytest.raises(ValueError):
        parse_rfc3339(text)


def test_to_ns_accepts_int_string_and_msgpack_timestamp():
    ns = 1_721_807_813_639_713_735
    assert to_ns(ns) == ns
    assert to_ns("2024-07-24T07:56:53.639713735Z") == ns
    assert to_ns(msgpack.Timestamp(1_721_807_813, 639_713_735)) == ns
    packed = msgpack.packb(msgpack.Timestamp.from_unix_nano(ns))
    assert to_ns(msgpack.unpackb(packed)) == ns


@pytest.mark.parametrize("value", [True, 1.5, None, b"2024", [1], -1, MAX_NS + 1])
def test_to_ns_rejects_other_types_and_ranges(value):
    with pytest.raises(ValueError):
        to_ns(value)


def test_format_received_wants_an_int():
    assert format_received(0) == "1970-01-01T00:00:00.000000000Z"
    with pytest.raises(ValueError):
        format_received("1700000000000000000")


@settings(deadline=None)
@given(ns_values)
def test_format_then_parse_round_trips_exactly(ns):
    text = format_ns(ns)
    assert len(text) == 30
    assert parse_rfc3339(text) == ns


@settings(deadline=None)
@given(ns_values)
def test_format_agrees_with_datetime(ns):
    seconds, fraction = divmod(ns, 10**9)
    moment = EPOCH + timedelta(seconds=seconds)
    assert format_ns(ns) == f"{moment:%Y-%m-%dT%H:%M:%S}.{fraction:09d}Z"


@settings(deadline=None)
@given(
    st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(9998, 12, 31)),
    st.integers(min_value=0, max_value=999),
    st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59),
)
def test_parse_with_any_offset_matches_datetime(local, extra_ns, offset_minutes):
    zone = timezone(timedelta(minutes=offset_minutes))
    moment = local.replace(tzinfo=zone)
    sign = "-" if offset_minutes < 0 else "+"
    hours, minutes = divmod(abs(offset_minutes), 60)
    text = (
        f"{local:%Y-%m-%dT%H:%M:%S}.{local.microsecond:06d}{extra_ns:03d}"
        f"{sign}{hours:02d}:{minutes:02d}"
    )
    assert parse_rfc3339(text) == oracle_ns(moment, extra_ns)


@settings(deadline=None)
@given(st.integers(min_value=-800_000, max_value=3_000_000))
def test_civil_days_round_trip(days):
    assert days_from_civil(*civil_from_days(days)) == days


@settings(deadline=None)
@given(st.text(max_size=40))
def test_parse_raises_only_value_error(text):
    with contextlib.suppress(ValueError):
        parse_rfc3339(text)
