"""The order publisher against a real Redis: exactly-once events, hashes that never regress."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from alpaca_broker.keys import Keys
from tasks.order_events import OrderEvent, prepare_order
from tasks.publisher import OrderResult, Publisher
from tests.harness.wait import wait_until
from tests.tasks.payloads import RECEIVED_NS, trade_update, trade_updates
from tests.tasks.test_publisher_prices import Subscriber, subscribed

KEYS = Keys("alpaca")
AAPL_ORDER = "61e69015-8549-4bfd-b9c3-01e75843f47d"


@pytest.fixture
def publisher(redis_url: str) -> Iterator[Publisher]:
    client = redis.Redis.from_url(redis_url)
    yield Publisher(client, KEYS, stream_maxlen=1000, dedupe_ttl=3600)
    client.close()


@pytest.fixture
def orders_channel(redis_client: redis.Redis) -> Iterator[Subscriber]:
    yield from subscribed(redis_client, KEYS.orders_channel)


def prepared(
    symbol: str, event: str, source: str = "stream", received: int = RECEIVED_NS
) -> OrderEvent:
    return prepare_order(trade_update(symbol, event), received, source)


def stream_events(client: redis.Redis) -> list[dict[str, Any]]:
    return [json.loads(fields["event"]) for _, fields in client.xrange(KEYS.orders_events)]


def test_a_lifecycle_new_partial_fill_fill_ends_filled(publisher, redis_client, orders_channel):
    for name in ("new", "partial_fill", "fill"):
        assert publisher.publish_order(prepared("AAPL", name)) == OrderResult(True, True)
    assert [e["event"] for e in stream_events(redis_client)] == ["new", "partial_fill", "fill"]
    state = redis_client.hgetall(KEYS.order(AAPL_ORDER))
    assert state == {
        "status": "filled", "event": "fill", "symbol": "AAPL", "side": "buy", "qty": "10",
        "filled_qty": "10", "filled_avg_price": "187.494",
        "updated_at": "2026-11-24T14:30:02.249999999Z", "json": state["json"],
        "ts_ns": str(json.loads(state["json"])["ts_ns"]),
    }  # fmt: skip
    assert json.loads(state["json"])["execution_id"] == "5f0e2d9c-3c77-4d0a-a5a3-6f2b8c1d0e22"
    wait_until(lambda: len(orders_channel.messages) >= 3, 5, message="3 channel messages")
    assert [json.loads(m)["event"] for _, m in orders_channel.messages] == [
        "new",
        "partial_fill",
        "fill",
    ]


def test_the_same_event_twice_is_one_entry_and_one_message(publisher, redis_client, orders_channel):
    first = prepared("AAPL", "partial_fill")
    again = prepared("AAPL", "partial_fill", received=RECEIVED_NS + 10**9)
    assert publisher.publish_order(first).new
    assert publisher.publish_order(again) == OrderResult(False, False)
    assert redis_client.xlen(KEYS.orders_events) == 1
    publisher.publish_order(prepared("AAPL", "fill"))  # a marker that the channel has caught up
    wait_until(lambda: len(orders_channel.messages) >= 2, 5, message="2 channel messages")
    assert [json.loads(m)["event"] for _, m in orders_channel.messages] == ["partial_fill", "fill"]


def test_a_reconciliation_duplicate_of_a_reconciled_event_adds_nothing(publisher, redis_client):
    rest_order = trade_update("MSFT", "canceled")["order"]
    data = {"event": "canceled", "order": rest_order, "timestamp": rest_order["updated_at"]}
    assert publisher.publish_order(prepare_order(data, RECEIVED_NS, "reconciliation")).new
    assert not publisher.publish_order(prepare_order(data, RECEIVED_NS + 1, "reconciliation")).new
    assert redis_client.xlen(KEYS.orders_events) == 1
    assert stream_events(redis_client)[0]["source"] == "reconciliation"


def test_a_stream_event_without_execution_id_dedupes_against_reconciliation(
    publisher, redis_client
):
    stream = prepared("MSFT", "canceled")
    rest_order = trade_update("MSFT", "canceled")["order"]
    timestamp = json.loads(stream.json)["timestamp"]
    data = {"event": "canceled", "order": rest_order, "timestamp": timestamp}
    assert publisher.publish_order(stream).new
    assert not publisher.publish_order(prepare_order(data, RECEIVED_NS, "reconciliation")).new
    assert redis_client.xlen(KEYS.orders_events) == 1


def reconciled(symbol: str, event: str) -> OrderEvent:
    """What reconciliation hands off for the state ``event`` led to: REST's order, its
    ``updated_at``, no ``execution_id``."""
    order = trade_update(symbol, event)["order"]
    data = {"event": event, "order": order, "timestamp": order["updated_at"]}
    return prepare_order(data, RECEIVED_NS + 5 * 10**9, "reconciliation")


def test_a_reconciled_fill_after_the_streamed_fill_adds_nothing(publisher, redis_client):
    assert publisher.publish_order(prepared("AAPL", "fill")).new
    assert publisher.publish_order(reconciled("AAPL", "fill")) == OrderResult(False, False)
    assert [e["source"] for e in stream_events(redis_client)] == ["stream"]


def test_a_streamed_fill_processed_after_its_stand_in_is_published_once_with_its_execution(
    publisher, redis_client
):
    # The streamed task waited in the queue (or in a paused holder) while reconciliation
    # published a stand-in for the same state: the real event is distinct and not hidden.
    assert publisher.publish_order(reconciled("AAPL", "fill")).new
    assert publisher.publish_order(prepared("AAPL", "fill")).new
    assert publisher.publish_order(prepared("AAPL", "fill")) == OrderResult(False, False)
    assert publisher.publish_order(reconciled("AAPL", "fill")) == OrderResult(False, False)
    events = stream_events(redis_client)
    assert [e["source"] for e in events] == ["reconciliation", "stream"]
    assert events[1]["execution_id"] == trade_update("AAPL", "fill")["execution_id"]
    assert redis_client.hget(KEYS.order(events[0]["order_id"]), "status") == "filled"


def test_two_streamed_executions_reaching_the_same_state_are_both_published(
    publisher, redis_client
):
    first = trade_update("AAPL", "partial_fill")
    second = json.loads(json.dumps(first))
    second["execution_id"] = "7d8f3c0e-1f0a-4c1b-9a52-000000000001"
    assert publisher.publish_order(prepare_order(first, RECEIVED_NS, "stream")).new
    assert publisher.publish_order(prepare_order(second, RECEIVED_NS, "stream")).new
    assert not publisher.publish_order(reconciled("AAPL", "partial_fill")).new
    assert redis_client.xlen(KEYS.orders_events) == 2


def test_out_of_order_events_never_regress_the_order_hash(publisher, redis_client):
    assert publisher.publish_order(prepared("AAPL", "fill")) == OrderResult(True, True)
    assert publisher.publish_order(prepared("AAPL", "partial_fill")) == OrderResult(True, False)
    assert publisher.publish_order(prepared("AAPL", "new")) == OrderResult(True, False)
    state = redis_client.hgetall(KEYS.order(AAPL_ORDER))
    assert (state["status"], state["event"], state["filled_qty"]) == ("filled", "fill", "10")
    assert redis_client.xlen(KEYS.orders_events) == 3  # every distinct event still published


def test_order_times_differing_only_in_the_last_nanosecond_compare_exactly(publisher, redis_client):
    older = trade_update("AAPL", "partial_fill")
    newer = trade_update("AAPL", "fill")
    older["timestamp"] = "2026-11-24T14:30:02.249999998Z"
    newer["timestamp"] = "2026-11-24T14:30:02.249999999Z"
    publisher.publish_order(prepare_order(newer, RECEIVED_NS, "stream"))
    assert not publisher.publish_order(prepare_order(older, RECEIVED_NS, "stream")).state_updated
    assert redis_client.hget(KEYS.order(AAPL_ORDER), "status") == "filled"


def test_a_hostile_time_inside_the_event_json_cannot_freeze_the_order_hash(publisher, redis_client):
    # Before the fix the held time was the first '"ts_ns":' of the stored JSON; a symbol of
    # {"ts_ns":99999999999999999999} (a map, now malformed) posed as a time far in the
    # future and every later event failed to update the hash. The held time is its own field.
    first = prepared("AAPL", "new")
    hostile = first.json.replace(b'"symbol":"AAPL"', b'"symbol":{"ts_ns":99999999999999999999}')
    assert hostile != first.json
    publisher.publish_order(dataclasses.replace(first, json=hostile))
    assert publisher.publish_order(prepared("AAPL", "fill")) == OrderResult(True, True)
    assert redis_client.hget(KEYS.order(AAPL_ORDER), "status") == "filled"


def test_a_hash_written_without_ts_ns_still_never_regresses(publisher, redis_client):
    # A hash written by the version before ts_ns existed: updated_at (fixed-width RFC 3339)
    # orders the events.
    publisher.publish_order(prepared("AAPL", "fill"))
    redis_client.hdel(KEYS.order(AAPL_ORDER), "ts_ns")
    assert publisher.publish_order(prepared("AAPL", "partial_fill")) == OrderResult(True, False)
    assert redis_client.hget(KEYS.order(AAPL_ORDER), "status") == "filled"


def test_a_malformed_order_event_is_counted_in_redis(publisher, redis_client):
    publisher.count_malformed_order()
    publisher.count_malformed_order()
    assert redis_client.get(KEYS.orders_malformed) == "2"


def test_replace_cancel_reject_and_expire_lifecycles(publisher, redis_client):
    others = [d for d in trade_updates() if d["order"]["symbol"] in ("MSFT", "TSLA", "GME", "SPY")]
    for data in others:
        assert publisher.publish_order(prepare_order(data, RECEIVED_NS, "stream")).new
    statuses = {
        d["order"]["client_order_id"]: redis_client.hget(KEYS.order(d["order"]["id"]), "status")
        for d in others
    }
    assert statuses == {
        "my-order-c": "canceled", "coid-d": "replaced", "coid-e": "new", "coid-f": "rejected",
        "coid-g": "expired",
    }  # fmt: skip
    assert redis_client.xlen(KEYS.orders_events) == len(others)


def test_decimal_strings_survive_in_stream_and_hash(publisher, redis_client):
    publisher.publish_order(prepared("BTC/USD", "fill"))
    (event,) = stream_events(redis_client)
    assert event["exec_qty"] == "0.123456789"
    order_id = event["order_id"]
    assert redis_client.hget(KEYS.order(order_id), "filled_qty") == "0.123456789"
    assert redis_client.hget(KEYS.order(order_id), "filled_avg_price") == "40123.123456789"


def test_the_dedupe_marker_expires_after_the_configured_ttl(publisher, redis_client):
    event = prepared("AAPL", "fill")
    publisher.publish_order(event)
    ttl = redis_client.ttl(KEYS.order_seen(event.dedupe_id))
    assert 3590 <= ttl <= 3600


def test_the_stream_is_capped_approximately(redis_url, redis_client):
    client = redis.Redis.from_url(redis_url)
    capped = Publisher(client, KEYS, stream_maxlen=10, dedupe_ttl=60)
    template = trade_update("AAPL", "fill")
    for i in range(400):
        data = {**template, "execution_id": f"exec-{i}"}
        capped.publish_order(prepare_order(data, RECEIVED_NS, "stream"))
    client.close()
    assert redis_client.xlen(KEYS.orders_events) < 400


def test_the_order_script_is_reloaded_after_a_script_flush(publisher, redis_client):
    redis_client.script_flush()
    assert publisher.publish_order(prepared("AAPL", "new")).new
    redis_client.script_flush()
    assert not publisher.publish_order(prepared("AAPL", "new")).new
    assert redis_client.xlen(KEYS.orders_events) == 1
