"""Crypto and option normalization against captured payloads, and fuzzed."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alpaca_broker.errors import MalformedMessage
from alpaca_broker.schema import COMMON_FIELDS
from tasks.price_events import FAMILIES, TAIL_FIELDS, normalize_price, prepare_price
from tasks.price_frames import prepare_batch
from tests.tasks.payloads import RECEIVED_NS, as_producer_sends, stream_expected, stream_messages
from tests.tasks.test_price_events import json_values

CAPTURES = [("crypto", "crypto"), ("options", "us_option")]


@pytest.mark.parametrize(("name", "family"), CAPTURES)
def test_every_captured_message_normalizes_to_the_expected_event(name, family):
    produced = [prepare_price(msg, RECEIVED_NS, family).json for msg in stream_messages(name)]
    assert produced == stream_expected(name)


@pytest.mark.parametrize(("name", "family"), CAPTURES)
def test_int_ns_timestamps_as_the_producer_sends_give_the_same_events(name, family):
    msgs = [as_producer_sends(msg, "t") for msg in stream_messages(name)]
    assert [prepare_price(m, RECEIVED_NS, family).json for m in msgs] == stream_expected(name)


@pytest.mark.parametrize(("name", "family"), CAPTURES)
def test_captures_cover_every_message_type_of_the_family(name, family):
    assert {msg["T"] for msg in stream_messages(name)} == set(FAMILIES[family].kinds)


@pytest.mark.parametrize(("name", "family"), CAPTURES)
def test_every_event_has_its_fields_in_order_then_asset_class_and_source(name, family):
    for msg in stream_messages(name):
        kind = FAMILIES[family].kinds[msg["T"]]
        event = normalize_price(msg, RECEIVED_NS, family)
        built = list(kind.build(msg)) if kind.build else []
        names = [n for n, _ in kind.fields]
        assert list(event) == [*COMMON_FIELDS, *names, *built, *TAIL_FIELDS]
        assert (event["asset_class"], event["source"]) == (family, "stream")


def test_crypto_trade_keeps_float_size_and_taker_side_and_nulls_stock_only_fields():
    trade = stream_messages("crypto")[0]
    event = normalize_price(trade, RECEIVED_NS, "crypto")
    assert event["size"] == 29.205707815
    assert event["taker_side"] == "S"
    assert event["trade_id"] == 3447222699101865076
    assert (event["exchange"], event["conditions"], event["tape"]) == (None, None, None)


def test_orderbook_levels_keep_alpacas_order_and_reset_defaults_to_false():
    snapshot, update = [m for m in stream_messages("crypto") if m["T"] == "o"]
    first = normalize_price(snapshot, RECEIVED_NS, "crypto")
    assert first["bids"] == [[71848.57, 0.8], [71845.2, 1.6]]
    assert first["asks"] == [[71860.4, 0.2], [71862, 1.15]]
    assert first["reset"] is True
    later = normalize_price(update, RECEIVED_NS, "crypto")
    assert later["bids"] == [[71845.2, 0]]
    assert later["reset"] is False


def test_orderbook_is_channel_only_and_other_crypto_events_are_held_in_latest():
    batch = prepare_batch([[RECEIVED_NS, m] for m in stream_messages("crypto")], "crypto")
    assert {e.type: e.latest for e in batch.events} == {
        "trade": True, "quote": True, "bar": True, "updated_bar": True, "daily_bar": True,
        "orderbook": False,
    }  # fmt: skip


def test_option_conditions_stay_the_one_string_alpaca_sends():
    trade, quote = stream_messages("options")[:2]
    assert normalize_price(trade, RECEIVED_NS, "us_option")["conditions"] == "S"
    assert normalize_price(quote, RECEIVED_NS, "us_option")["conditions"] == "A"


def test_backfill_source_is_taken_from_a_third_item_element():
    bar = next(m for m in stream_messages("crypto") if m["T"] == "b")
    batch = prepare_batch([[RECEIVED_NS, bar, "backfill"], [RECEIVED_NS, bar]], "crypto")
    assert [json.loads(e.json)["source"] for e in batch.events] == ["backfill", "stream"]


MALFORMED: list[tuple[str, str, Any, str]] = [
    ("crypto", "orderbook side not a list", {"b": "x"}, "bad order book"),
    ("crypto", "orderbook level not a map", {"b": [[1.0, 2.0]]}, "bad order book"),
    ("crypto", "orderbook level without size", {"a": [{"p": 1.0}]}, "bad order book"),
    ("crypto", "orderbook boolean price", {"a": [{"p": True, "s": 1}]}, "bad order book"),
    ("crypto", "orderbook reset not a bool", {"r": "yes"}, "bad order book"),
    ("crypto", "orderbook without asks", {"a": None}, "missing keys"),
    ("crypto", "status is no crypto message", {"T": "s", "sc": "H"}, "unknown T"),
    ("us_option", "option bar", {"T": "b", "o": 1, "h": 1, "l": 1, "c": 1, "v": 1}, "unknown T"),
    ("us_option", "option trade without price", {"T": "t", "p": None}, "missing keys"),
    ("forex", "unknown family", {}, "unknown family"),
]


@pytest.mark.parametrize(
    ("family", "case", "change", "kind"), MALFORMED, ids=[c[1] for c in MALFORMED]
)
def test_malformed_messages_raise_with_their_kind(family, case, change, kind):
    base = stream_messages("crypto" if family != "us_option" else "options")
    raw = {**(base[-2] if family == "crypto" else base[0]), **change}
    with pytest.raises(MalformedMessage) as caught:
        normalize_price(raw, RECEIVED_NS, family)
    assert caught.value.kind == kind


def test_unknown_source_is_malformed():
    with pytest.raises(MalformedMessage, match="unknown source"):
        normalize_price(stream_messages("crypto")[0], RECEIVED_NS, "crypto", "replay")


raw_keys = st.sampled_from(
    sorted({key for fam in FAMILIES.values() for kind in fam.kinds.values() for key in
            kind.required} | {"tks", "r", "x", "c", "z"})
)  # fmt: skip
levels = st.lists(
    st.one_of(st.dictionaries(st.sampled_from(["p", "s"]), json_values, max_size=2), json_values),
    max_size=3,
)


@settings(deadline=None)
@given(
    st.sampled_from([*sorted(FAMILIES), "?"]),
    st.dictionaries(raw_keys | st.text(max_size=3), json_values | levels, max_size=12),
    st.sampled_from(["t", "q", "b", "u", "d", "o", "n", "?"]),
    st.one_of(
        st.integers(),
        st.text(max_size=35),
        st.builds(msgpack.Timestamp, st.integers(0, 2**34 - 1), st.integers(0, 999_999_999)),
    ),
    st.one_of(st.integers(), json_values),
    st.sampled_from(["stream", "backfill", "?"]),
)
def test_normalizer_raises_nothing_but_malformed_on_arbitrary_maps(
    family, raw, code, ts, received, source
):
    raw = {**raw, "T": code, "t": ts}
    with contextlib.suppress(MalformedMessage):
        prepare_price(raw, received, family, source)


@settings(deadline=None)
@given(
    st.sampled_from(sorted(FAMILIES)),
    st.one_of(json_values, st.lists(st.lists(json_values, max_size=4), max_size=4)),
)
def test_batch_of_any_family_never_raises_on_arbitrary_input(family, items):
    batch = prepare_batch(items, family)
    assert all(isinstance(m, MalformedMessage) for m in batch.malformed)
