"""Market-data normalization against captured payloads (JSON and msgpack modes)."""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alpaca_broker.errors import MalformedMessage
from alpaca_broker.logs import MalformedReporter
from alpaca_broker.schema import COMMON_FIELDS, EVENT_TYPES, FIELD_MAPS, REQUIRED_KEYS
from tasks.price_events import (
    TAIL_FIELDS,
    PriceEvent,
    newest_per_type,
    normalize_price,
    prepare_price,
)
from tasks.price_frames import prepare_batch
from tests.tasks.payloads import (
    RECEIVED_NS,
    expected_events,
    json_messages,
    load_json,
    msgpack_messages,
    producer_messages,
)


def test_every_captured_json_message_normalizes_to_the_expected_event():
    produced = [prepare_price(msg, RECEIVED_NS).json for msg in json_messages()]
    assert produced == expected_events()


@pytest.mark.parametrize("variant", [msgpack_messages, producer_messages])
def test_msgpack_and_int_timestamps_give_the_same_events_as_json(variant):
    produced = [prepare_price(msg, RECEIVED_NS).json for msg in variant()]
    assert produced == expected_events()


def test_captures_cover_every_market_data_type():
    assert {msg["T"] for msg in json_messages()} == set(EVENT_TYPES)


@pytest.mark.parametrize("msg", json_messages(), ids=lambda m: f"{m['T']}-{m['S']}")
def test_event_has_every_contract_field_in_order(msg):
    event = normalize_price(msg, RECEIVED_NS)
    fields = [name for name, _ in FIELD_MAPS[msg["T"]]]
    assert list(event) == [*COMMON_FIELDS, *fields, *TAIL_FIELDS]
    assert (event["asset_class"], event["source"]) == ("us_equity", "stream")
    assert event["type"] == EVENT_TYPES[msg["T"]]
    assert event["symbol"] == msg["S"]
    assert event["received_at"] == "2023-11-14T22:13:20.123456789Z"
    for name, key in FIELD_MAPS[msg["T"]]:
        assert event[name] == msg.get(key)
        assert type(event[name]) is type(msg.get(key))  # an int stays an int


def test_absent_fields_are_null():
    event = normalize_price(
        {"T": "d", "S": "SPY", "o": 388.985, "h": 389.13, "l": 388.975, "c": 389.12,
         "v": 749378, "t": "2021-02-16T04:00:00Z"},
        RECEIVED_NS,
    )  # fmt: skip
    assert event["trade_count"] is None
    assert event["vwap"] is None


def test_nanoseconds_survive_into_timestamp_and_ts_ns():
    msg = {"T": "t", "S": "AAPL", "p": 1.5, "s": 1, "t": msgpack.Timestamp(1_795_530_600, 1)}
    event = normalize_price(msg, RECEIVED_NS)
    assert event["timestamp"] == "2026-11-24T14:30:00.000000001Z"
    assert event["ts_ns"] == 1_795_530_600_000_000_001


def test_integral_price_stays_an_integer_in_json():
    msg = {"T": "b", "S": "X", "o": 136, "h": 136, "l": 136, "c": 136, "v": 1, "t": 0}
    assert b'"open":136,' in prepare_price(msg, RECEIVED_NS).json


def test_event_json_is_compact_utf8():
    msg = {"T": "s", "S": "ÄBC", "sc": "H", "sm": "Halt \u2013 news", "t": 0, "z": "C"}
    encoded = prepare_price(msg, RECEIVED_NS).json
    assert "Halt \u2013 news".encode() in encoded
    assert b": " not in encoded
    assert b", " not in encoded
    assert json.loads(encoded)["symbol"] == "ÄBC"


MALFORMED = load_json("malformed_market_data.json")


@pytest.mark.parametrize("case", MALFORMED, ids=[c["case"] for c in MALFORMED])
def test_malformed_messages_raise_with_their_kind(case):
    with pytest.raises(MalformedMessage) as caught:
        normalize_price(case["raw"], RECEIVED_NS)
    assert caught.value.kind == case["kind"]
    assert caught.value.context == case["raw"]


@pytest.mark.parametrize("received", ["1700000000000000000", 1.7e18, None, True, -5])
def test_bad_receive_time_is_malformed(received):
    with pytest.raises(MalformedMessage, match="received_at"):
        normalize_price(json_messages()[0], received)


def test_nan_price_cannot_be_published():
    msg = {"T": "t", "S": "AAPL", "p": float("nan"), "s": 1, "t": 0}
    with pytest.raises(MalformedMessage, match="unencodable"):
        prepare_price(msg, RECEIVED_NS)


def test_batch_keeps_valid_items_and_sets_aside_malformed_ones():
    good = producer_messages()
    items: list[Any] = [[RECEIVED_NS, msg] for msg in good]
    items.insert(1, [RECEIVED_NS, MALFORMED[0]["raw"]])
    items.insert(3, ["not a pair"])
    items.insert(5, [RECEIVED_NS, {"T": "t", "S": "AAPL", "p": 1, "s": 1, "t": "nope"}])
    batch = prepare_batch(items)
    assert [e.json for e in batch.events] == expected_events()
    assert [m.kind for m in batch.malformed] == ["unknown T", "bad item", "bad timestamp"]


def test_a_batch_that_is_not_a_list_is_one_malformed_item():
    batch = prepare_batch({"T": "t"})
    assert batch.events == []
    assert len(batch.malformed) == 1


def _event(symbol: str, type_: str, ts_ns: int, received: int, tag: str) -> PriceEvent:
    return PriceEvent(symbol, type_, ts_ns, received, "", tag.encode())


def test_newest_per_type_keeps_greatest_time_then_latest_receipt():
    events = [
        _event("A", "bar", 20, 1, "a-new"),
        _event("A", "bar", 10, 2, "a-old"),
        _event("A", "trade", 5, 1, "a-trade"),
        _event("B", "daily_bar", 7, 1, "b-first"),
        _event("B", "daily_bar", 7, 3, "b-last"),
        _event("B", "daily_bar", 7, 2, "b-middle"),
    ]
    kept = {(e.symbol, e.type): e.json for e in newest_per_type(events)}
    assert kept == {
        ("A", "bar"): b"a-new",
        ("A", "trade"): b"a-trade",
        ("B", "daily_bar"): b"b-last",
    }


def test_reporter_logs_once_per_kind_per_interval(caplog):
    now = [0.0]
    reporter = MalformedReporter(
        logging.getLogger("test.malformed"), interval=60, clock=lambda: now[0]
    )
    caplog.set_level(logging.WARNING, logger="test.malformed")
    kinds = ["unknown T", "unknown T", "bad timestamp", "unknown T"]
    logged = [
        reporter.report(MalformedMessage(kind, "x", {"T": "?"}), "price message") for kind in kinds
    ]
    assert logged == [True, False, True, False]
    now[0] = 61.0
    assert reporter.report(MalformedMessage("unknown T", "x", {"T": "?"}), "price message")
    assert reporter.total == 5
    assert len(caplog.records) == 3
    assert "and 2 more of this kind" in caplog.records[-1].getMessage()
    assert "{'T': '?'}" in caplog.records[0].getMessage()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=8,
)
raw_keys = st.sampled_from(
    sorted({k for keys in REQUIRED_KEYS.values() for k in keys} | {"z", "n", "vw", "i"})
)
timestamps = st.one_of(
    st.integers(),
    st.text(max_size=35),
    st.builds(msgpack.Timestamp, st.integers(0, 2**34 - 1), st.integers(0, 999_999_999)),
    json_values,
)


@settings(deadline=None)
@given(
    st.dictionaries(raw_keys | st.text(max_size=3), json_values, max_size=12),
    st.sampled_from([*sorted(EVENT_TYPES), "?", "n"]),
    timestamps,
    st.one_of(st.integers(), json_values),
)
def test_normalizer_raises_nothing_but_malformed_on_arbitrary_maps(raw, code, ts, received):
    raw = {**raw, "T": code, "t": ts}
    with contextlib.suppress(MalformedMessage):
        prepare_price(raw, received)


@settings(deadline=None)
@given(st.one_of(json_values, st.lists(st.lists(json_values, max_size=3), max_size=4)))
def test_batch_never_raises_on_arbitrary_input(items):
    batch = prepare_batch(items)
    assert all(isinstance(m, MalformedMessage) for m in batch.malformed)


def test_lone_surrogate_symbol_cannot_be_published():
    msg = {"T": "t", "S": "A\ud800", "p": 1.5, "s": 1, "t": 0}
    with pytest.raises(MalformedMessage, match="unencodable"):
        prepare_price(msg, RECEIVED_NS)
