"""Order-update normalization against captured trade_updates payloads."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alpaca_broker.errors import MalformedMessage
from alpaca_broker.schema import COMMON_FIELDS, ORDER_HASH_FIELDS, ORDER_UPDATE_FIELDS
from tasks.order_events import normalize_order, prepare_order
from tests.tasks.payloads import RECEIVED_NS, load_json, trade_update, trade_updates

EVENT_KEYS = [*COMMON_FIELDS, *(f for f in ORDER_UPDATE_FIELDS if f not in COMMON_FIELDS)]


def test_captures_cover_the_lifecycle_events():
    names = {d["event"] for d in trade_updates()}
    assert names >= {"new", "partial_fill", "fill", "canceled", "replaced", "rejected", "expired"}


@pytest.mark.parametrize(
    "data", trade_updates(), ids=lambda d: f"{d['order']['symbol']}-{d['event']}"
)
def test_every_captured_event_has_every_contract_field_in_order(data):
    event = normalize_order(data, RECEIVED_NS, "stream")
    assert list(event) == EVENT_KEYS
    order = data["order"]
    assert event["type"] == "order_update"
    assert event["event"] == data["event"]
    assert event["order_id"] == order["id"]
    assert event["symbol"] == order["symbol"]
    for field in ("client_order_id", "side", "order_type", "order_class", "time_in_force", "qty",
                  "notional", "filled_qty", "filled_avg_price", "limit_price", "stop_price",
                  "status"):  # fmt: skip
        assert event[field] == order[field]
    assert event["execution_id"] == data.get("execution_id")
    assert event["price"] == data.get("price")
    assert event["exec_qty"] == data.get("qty")
    assert event["position_qty"] == data.get("position_qty")
    assert event["source"] == "stream"
    assert event["order"] == order


def test_fill_decimals_survive_as_exact_strings():
    encoded = prepare_order(trade_update("BTC/USD", "fill"), RECEIVED_NS, "stream").json
    event = json.loads(encoded)
    assert event["exec_qty"] == "0.123456789"
    assert event["filled_qty"] == "0.123456789"
    assert event["filled_avg_price"] == "40123.123456789"
    assert event["order"]["qty"] == "0.123456789"
    assert b'"exec_qty":"0.123456789"' in encoded


def test_partial_fill_exec_qty_is_the_events_own_qty():
    event = normalize_order(trade_update("AAPL", "fill"), RECEIVED_NS, "stream")
    assert event["exec_qty"] == "6"
    assert event["filled_qty"] == "10"
    assert event["price"] == "187.49"
    assert event["filled_avg_price"] == "187.494"


def test_offset_timestamps_become_utc_with_nanoseconds():
    data = trade_update("BTC/USD", "fill")
    data["timestamp"] = "2022-04-19T13:45:05.024916716-04:00"
    event = normalize_order(data, RECEIVED_NS, "stream")
    assert event["timestamp"] == "2022-04-19T17:45:05.024916716Z"
    assert event["ts_ns"] == 1_650_390_305_024_916_716


def test_event_without_timestamp_takes_the_orders_updated_at():
    data = trade_update("SPY", "new")
    assert "timestamp" not in data
    event = normalize_order(data, RECEIVED_NS, "stream")
    assert event["timestamp"] == "2026-11-23T14:30:00.000200000Z"


def test_reconciliation_event_has_no_execution_id_and_dedupes_on_order_event_time():
    rest_order = trade_update("AAPL", "fill")["order"]
    data = {"event": "fill", "order": rest_order, "timestamp": rest_order["updated_at"]}
    prepared = prepare_order(data, RECEIVED_NS, "reconciliation")
    event = json.loads(prepared.json)
    assert event["source"] == "reconciliation"
    assert event["execution_id"] is None
    assert event["exec_qty"] is None
    assert prepared.dedupe_id == f"{rest_order['id']}|fill|2026-11-24T14:30:02.250000001Z"


def test_dedupe_id_is_the_execution_id_when_there_is_one():
    data = trade_update("AAPL", "partial_fill")
    assert prepare_order(data, RECEIVED_NS, "stream").dedupe_id == data["execution_id"]


def test_the_state_id_is_the_same_for_a_streamed_and_a_reconciled_fill():
    streamed = trade_update("AAPL", "fill")
    order = dict(streamed["order"], filled_qty="10.000")  # REST may spell it otherwise
    rest = {"event": "fill", "order": order, "timestamp": order["updated_at"]}
    first = prepare_order(streamed, RECEIVED_NS, "stream")
    second = prepare_order(rest, RECEIVED_NS, "reconciliation")
    assert first.state_id == second.state_id == f"{order['id']}|fill|filled|10"
    assert first.dedupe_id != second.dedupe_id


def test_same_instant_in_two_notations_dedupes_alike():
    data = trade_update("MSFT", "canceled")
    other = trade_update("MSFT", "canceled")
    other["timestamp"] = "2026-11-24T10:00:03.333333333-05:00"
    first = prepare_order(data, RECEIVED_NS, "stream")
    second = prepare_order(other, RECEIVED_NS + 1, "stream")
    assert first.dedupe_id == second.dedupe_id


def test_hash_fields_are_strings_with_null_as_empty():
    prepared = prepare_order(trade_update("AAPL", "new"), RECEIVED_NS, "stream")
    fields = dict(prepared.hash_fields)
    assert [*fields, "json"] == list(ORDER_HASH_FIELDS)
    assert fields == {
        "status": "new", "event": "new", "symbol": "AAPL", "side": "buy", "qty": "10",
        "filled_qty": "0", "filled_avg_price": "", "updated_at": "2026-11-24T14:30:00.102202202Z",
        "ts_ns": str(prepared.ts_ns),
    }  # fmt: skip


MALFORMED = load_json("malformed_trade_updates.json")


@pytest.mark.parametrize("case", MALFORMED, ids=[c["case"] for c in MALFORMED])
def test_malformed_order_events_raise_with_their_kind(case):
    with pytest.raises(MalformedMessage) as caught:
        normalize_order(case["data"], RECEIVED_NS, case["source"])
    assert caught.value.kind == case["kind"]


HOSTILE = [
    ("symbol", {"ts_ns": 99999999999999999999}, "order: bad symbol"),
    ("symbol", None, "order: bad symbol"),
    ("symbol", "", "order: bad symbol"),
    ("side", ["buy"], "order: bad field"),
    ("status", 1, "order: bad field"),
    ("type", {"x": 1}, "order: bad field"),
    ("filled_qty", "1e999999999", "order: bad decimal"),
    ("filled_qty", "1e999999", "order: bad decimal"),
    ("filled_qty", "1" * 49, "order: bad decimal"),
    ("filled_qty", "NaN", "order: bad decimal"),
    ("filled_qty", "Infinity", "order: bad decimal"),
    ("qty", "1e-31", "order: bad decimal"),
    ("qty", True, "order: bad decimal"),
    ("filled_avg_price", {"a": 1}, "order: bad decimal"),
    ("limit_price", float("inf"), "order: bad decimal"),
    ("id", "x" * 129, "order: no order id"),
]


@pytest.mark.parametrize(
    ("key", "value", "kind"), HOSTILE, ids=[f"{k}={v!r:.20}" for k, v, _ in HOSTILE]
)
def test_hostile_order_fields_are_malformed(key, value, kind):
    data = trade_update("AAPL", "fill")
    data["order"][key] = value
    with pytest.raises(MalformedMessage) as caught:
        prepare_order(data, RECEIVED_NS, "stream")
    assert caught.value.kind == kind


@pytest.mark.parametrize("key", ["qty", "price", "position_qty"])
def test_hostile_event_decimals_are_malformed(key):
    data = {**trade_update("AAPL", "fill"), key: "9e99999"}
    with pytest.raises(MalformedMessage, match="bad decimal"):
        prepare_order(data, RECEIVED_NS, "stream")


def test_hostile_execution_id_is_malformed():
    data = {**trade_update("AAPL", "fill"), "execution_id": {"ts_ns": 1}}
    with pytest.raises(MalformedMessage, match="bad execution id"):
        prepare_order(data, RECEIVED_NS, "stream")


@pytest.mark.parametrize("value", ["1e30", "-1E-30", "0e9999", ".5", "10.", "187.494", 3, 2.5, ""])
def test_bounded_decimals_pass_and_keep_short_state_ids(value):
    data = trade_update("AAPL", "fill")
    data["order"]["filled_qty"] = value
    prepared = prepare_order(data, RECEIVED_NS, "stream")
    assert len(prepared.state_id) < 200
    assert json.loads(prepared.json)["filled_qty"] == value


def test_lone_surrogate_cannot_be_published():
    data = trade_update("AAPL", "new")
    data["order"]["client_order_id"] = "bad\ud800"
    with pytest.raises(MalformedMessage, match="unencodable"):
        prepare_order(data, RECEIVED_NS, "stream")


decimal_texts = st.one_of(
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.from_regex(r"\A[+-]?[0-9]{0,60}(\.[0-9]{0,60})?([eE][+-]?[0-9]{1,12})?\Z"),
    st.sampled_from(["1e999999999", "1e999999", "-0E-999999999", "NaN", "sNaN", "Infinity"]),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=80) | decimal_texts,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3)
    ),
    max_leaves=8,
)
# Every key the normalizer reads, the decimals among them (filled_qty included).
data_keys = st.sampled_from(["event", "execution_id", "qty", "price", "position_qty", "timestamp"])
order_keys = st.sampled_from(
    ["id", "symbol", "status", "qty", "updated_at", "side", "type", "order_type", "notional",
     "filled_qty", "filled_avg_price", "limit_price", "stop_price", "client_order_id",
     "order_class", "time_in_force"]
)  # fmt: skip


@settings(deadline=None)
@given(
    st.dictionaries(data_keys, json_values),
    st.one_of(
        st.none(), st.dictionaries(order_keys, json_values | st.text(min_size=1, max_size=40))
    ),
    st.one_of(st.integers(), json_values),
    st.sampled_from(["stream", "reconciliation", "other"]) | json_values,
)
def test_normalizer_raises_nothing_but_malformed_on_arbitrary_data(data, order, received, source):
    if order is not None:
        data = {**data, "order": order}
    with contextlib.suppress(MalformedMessage):
        prepare_order(data, received, source)


@settings(deadline=None, max_examples=400)
@given(
    st.dictionaries(order_keys, json_values | decimal_texts, max_size=4),
    st.dictionaries(data_keys, json_values | decimal_texts, max_size=3),
    st.sampled_from(["stream", "reconciliation"]),
)
def test_a_real_event_with_any_fields_replaced_is_published_or_malformed(
    order_changes, data_changes, source
):
    # Mutations of a valid event reach every check past the first ones (the pure
    # arbitrary data above rarely does): decimals of any spelling, types of every field.
    data = trade_update("AAPL", "fill")
    data["order"].update(order_changes)
    data.update(data_changes)
    with contextlib.suppress(MalformedMessage):
        prepared = prepare_order(data, RECEIVED_NS, source)
        # What passes is bounded: the dedupe and state markers stay short keys.
        assert len(prepared.dedupe_id) < 300
        assert len(prepared.state_id) < 400


@settings(deadline=None, max_examples=300)
@given(decimal_texts)
def test_filled_qty_of_any_spelling_is_published_or_malformed(filled_qty):
    data = trade_update("AAPL", "fill")
    data["order"]["filled_qty"] = filled_qty
    with contextlib.suppress(MalformedMessage):
        assert len(prepare_order(data, RECEIVED_NS, "stream").state_id) < 400
