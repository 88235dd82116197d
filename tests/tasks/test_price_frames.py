"""A frame's fast path (msgspec) writes what the message-by-message path writes, or steps aside."""

from __future__ import annotations

import base64
import math
from typing import Any

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from alpaca_broker.errors import MalformedMessage
from alpaca_broker.schema import FIELD_MAPS, REQUIRED_KEYS
from tasks.price_events import FAMILIES, PriceEvent, prepare_in
from tasks.price_frames import frame_decoder, prepare_batch
from tests.tasks.payloads import (
    PAYLOADS,
    RECEIVED_NS,
    expected_events,
    stream_expected,
    stream_messages,
)


def _slow(frame: bytes, family: str) -> tuple[list[PriceEvent], int]:
    """The message-by-message path: its events and how many messages it found malformed."""
    events, malformed = [], 0
    for raw in msgpack.unpackb(frame, timestamp=2):
        try:
            events.append(prepare_in(FAMILIES[family], raw, RECEIVED_NS, "stream"))
        except MalformedMessage:
            malformed += 1
    return events, malformed


def _item(frame: bytes) -> list[Any]:
    return [RECEIVED_NS, base64.b64encode(frame).decode("ascii")]


def test_captured_msgpack_frames_take_the_fast_path_and_match_the_expected_events() -> None:
    frames = msgpack.unpackb((PAYLOADS / "market_data.msgpack").read_bytes())
    decoder = frame_decoder("us_equity")
    fast = [decoder.decode(frame, RECEIVED_NS) for frame in frames]
    assert all(events is not None for events in fast)
    assert [e.json for events in fast for e in events or []] == expected_events()


def test_a_frame_with_one_bad_message_goes_message_by_message_and_keeps_the_rest() -> None:
    good = {"T": "t", "S": "AAPL", "p": 1.5, "s": 10, "t": msgpack.Timestamp(1_700_000_000, 5)}
    frame = msgpack.packb([good, {"T": "t", "S": "AAPL", "p": 1.5}, good])  # no s, no t
    assert frame_decoder("us_equity").decode(frame, RECEIVED_NS) is None
    batch = prepare_batch([_item(frame)])
    assert len(batch.events) == 2
    assert [exc.kind for exc in batch.malformed] == ["missing keys"]


def test_a_nan_price_is_malformed_on_either_path() -> None:
    bad = {"T": "q", "S": "AAPL", "bp": math.nan, "ap": 1.0, "t": 1_700_000_000_000_000_000}
    frame = msgpack.packb([bad])
    assert frame_decoder("us_equity").decode(frame, RECEIVED_NS) is None
    assert [exc.kind for exc in prepare_batch([_item(frame)]).malformed] == ["unencodable"]


def test_crypto_order_books_take_the_slow_path_and_still_arrive() -> None:
    messages = stream_messages("crypto")
    assert any(m["T"] == "o" for m in messages)
    frame = msgpack.packb(messages)
    assert frame_decoder("crypto").decode(frame, RECEIVED_NS) is None
    batch = prepare_batch([_item(frame)], "crypto")
    assert not batch.malformed
    assert [e.json for e in batch.events] == stream_expected("crypto")


_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=4)
    | st.binary(max_size=3)
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=2), inner),
    max_leaves=5,
)
_times = (
    st.builds(msgpack.Timestamp, st.integers(0, 2**34 - 1), st.integers(0, 999_999_999))
    | st.integers(-5, 2**64 - 1)
    | st.sampled_from(["2026-11-30T10:00:00.5Z", "not a time"])
)
_KEYS = [
    "p",
    "s",
    "bp",
    "ap",
    "o",
    "h",
    "l",
    "c",
    "v",
    "sc",
    "u",
    "d",
    "cp",
    "cs",
    "i",
    "x",
    "z",
    "as",
    "n",
]
_messages = st.fixed_dictionaries(
    {
        "T": st.sampled_from(list("tqbudslcx")),
        "S": st.sampled_from(["AAPL", "", "BTC/USD"]) | _values,
        "t": _times,
    },
    optional=dict.fromkeys(_KEYS, _values),
)


_present = st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=3)


def _well_formed(code: str) -> st.SearchStrategy[dict[str, Any]]:
    """A message of ``code`` with every required key: what a live frame mostly holds."""
    required = sorted(REQUIRED_KEYS[code] - {"T", "S", "t"})
    optional = [key for _, key in FIELD_MAPS[code] if key not in REQUIRED_KEYS[code]]
    return st.fixed_dictionaries(
        {
            "T": st.just(code),
            "S": st.sampled_from(["AAPL", "BTC/USD", "SPY250117C00500000"]),
            "t": st.builds(msgpack.Timestamp, st.integers(0, 2**34 - 1), st.integers(0, 10**9 - 1)),
            **dict.fromkeys(required, _present),
        },
        optional=dict.fromkeys(optional, _scalars | st.lists(st.text(max_size=2), max_size=2)),
    )


_live = st.sampled_from(list("tqb")).flatmap(_well_formed)


@settings(max_examples=300)
@given(
    st.lists(_live | _live | _messages, min_size=1, max_size=6), st.sampled_from(sorted(FAMILIES))
)
def test_the_fast_path_writes_what_the_slow_path_writes_or_steps_aside(
    messages: list[dict[str, Any]], family: str
) -> None:
    frame = msgpack.packb(messages)
    fast = frame_decoder(family).decode(frame, RECEIVED_NS)
    if fast is None:
        return
    events, malformed = _slow(frame, family)
    assert malformed == 0
    assert fast == events
