"""Orders end to end: simulator -> real producer process -> real worker -> Redis, exactly once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis

from alpaca_broker.keys import Keys
from alpaca_broker.redis_server import RedisServer
from simulator.api import Simulator
from tests.harness.producer import ProducerProcess
from tests.harness.wait import wait_until

KEYS = Keys()
ORDER_ENV = {"RECONCILE_INTERVAL": "3600"}  # reconcile on (re)connect only, unless a test says


def _stream(client: redis.Redis) -> list[dict[str, Any]]:
    return [json.loads(f["event"]) for _, f in client.xrange(KEYS.orders_events)]


def _events_of(client: redis.Redis, order_id: str) -> list[str]:
    return [e["event"] for e in _stream(client) if e["order_id"] == order_id]


@pytest.fixture
def running(sim, redis_url, worker_factory, producer_factory) -> ProducerProcess:
    worker_factory(redis_url, queues="orders")
    producer: ProducerProcess = producer_factory(redis_url, sim, streams="orders", **ORDER_ENV)
    producer.wait_connected("orders")
    return producer


def test_lifecycles_produce_exact_entries_channel_messages_and_final_hashes(
    sim: Simulator, running, redis_client
) -> None:
    channel = redis_client.pubsub(ignore_subscribe_messages=True)
    channel.subscribe(KEYS.orders_channel)
    wait_until(lambda: channel.get_message(timeout=0.05) is None and channel.subscribed, 5)
    book = sim.orders
    filled = book.submit("AAPL", qty="0.123456789", limit_price="190.5", order_type="limit")
    book.fill(filled["id"], qty="0.1")
    book.fill(filled["id"])
    canceled = book.submit("MSFT", qty="3")
    book.cancel(canceled["id"])
    original = book.submit("TSLA", qty="2", limit_price="250", order_type="limit")
    replacement = book.replace(original["id"], qty="4")
    rejected = book.submit("NVDA", qty="1", events=())
    book.reject(rejected["id"])

    expected = {
        filled["id"]: ["new", "partial_fill", "fill"],
        canceled["id"]: ["new", "canceled"],
        original["id"]: ["new", "replaced"],
        replacement["id"]: ["new"],
        rejected["id"]: ["rejected"],
    }
    total = sum(map(len, expected.values()))
    wait_until(lambda: len(_stream(redis_client)) == total, 20, message="all order events")
    for order_id, events in expected.items():
        assert _events_of(redis_client, order_id) == events
    published = []
    while (msg := channel.get_message(timeout=0.2)) is not None:
        published.append(json.loads(msg["data"]))

    def canonical(events: list[dict[str, Any]]) -> list[str]:
        return sorted(json.dumps(e, sort_keys=True) for e in events)

    assert canonical(published) == canonical(_stream(redis_client))  # each once, same JSON

    final = redis_client.hgetall(KEYS.order(filled["id"]))
    assert (final["status"], final["event"], final["qty"], final["filled_qty"]) == (
        "filled", "fill", "0.123456789", "0.123456789",
    )  # fmt: skip
    assert json.loads(final["json"])["order"]["qty"] == "0.123456789"
    assert redis_client.hget(KEYS.order(canceled["id"]), "status") == "canceled"
    assert redis_client.hget(KEYS.order(original["id"]), "status") == "replaced"
    assert redis_client.hget(KEYS.order(rejected["id"]), "status") == "rejected"
    fill = next(e for e in _stream(redis_client) if e["event"] == "partial_fill")
    assert (fill["exec_qty"], fill["source"]) == ("0.1", "stream")
    assert fill["execution_id"]


def test_the_same_event_delivered_twice_appears_once(sim: Simulator, running, redis_client) -> None:
    order = sim.orders.submit("AAPL", qty="5")
    envelope = sim.orders.fill(order["id"])
    sim.push_trade_update(envelope)  # the stream sends the fill a second time
    wait_until(lambda: len(_stream(redis_client)) == 2, 15)
    marker = sim.orders.submit("AAPL", qty="1")  # processed after the duplicate
    wait_until(lambda: marker["id"] in {e["order_id"] for e in _stream(redis_client)}, 15)
    assert _events_of(redis_client, order["id"]) == ["new", "fill"]


def test_an_older_event_processed_later_does_not_regress_the_order_hash(
    sim: Simulator, running, redis_client
) -> None:
    order = sim.orders.submit("AAPL", qty="5")
    partial = sim.orders.fill(order["id"], qty="2")
    sim.orders.fill(order["id"])
    wait_until(lambda: redis_client.hget(KEYS.order(order["id"]), "status") == "filled", 15)
    late = json.loads(json.dumps(partial))
    late["data"]["execution_id"] = "7d8f3c0e-1f0a-4c1b-9a52-000000000001"  # a distinct event
    sim.push_trade_update(late)
    wait_until(lambda: len(_events_of(redis_client, order["id"])) == 4, 15)
    assert redis_client.hget(KEYS.order(order["id"]), "status") == "filled"


def test_a_fill_during_a_trading_socket_outage_is_recovered_by_reconciliation(
    sim: Simulator, running, redis_client
) -> None:
    order = sim.orders.submit("AAPL", qty="10")
    wait_until(lambda: redis_client.hget(KEYS.order(order["id"]), "status") == "new", 15)
    with sim.outage("trading"):
        wait_until(lambda: running.stream_state("orders") != "connected", 10)
        sim.orders.fill(order["id"])  # visible in REST only
    running.wait_connected("orders", timeout=15)
    wait_until(lambda: redis_client.hget(KEYS.order(order["id"]), "status") == "filled", 10)
    recovered = [e for e in _stream(redis_client) if e["order_id"] == order["id"]][-1]
    assert (recovered["event"], recovered["source"], recovered["execution_id"]) == (
        "fill", "reconciliation", None,
    )  # fmt: skip


@pytest.mark.slow
def test_redis_restart_with_aof_while_order_events_flow_loses_and_doubles_nothing(
    sim: Simulator, tmp_path: Path, worker_factory
) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        worker_factory(server.url, queues="orders")
        producer = ProducerProcess(
            server.url,
            {k: v for k, v in (line.split("=", 1) for line in sim.env_lines())},
            tmp_path / "producer.log",
            streams="orders",
            **ORDER_ENV,
        ).start()
        producer.wait_connected("orders")
        client = redis.Redis.from_url(server.url, decode_responses=True)
        ids = [sim.orders.submit("AAPL", qty="1")["id"] for _ in range(20)]
        server.restart(kill=True)
        ids += [sim.orders.submit("AAPL", qty="1")["id"] for _ in range(20)]
        wait_until(lambda: len(_stream(client)) >= 40, 60, message=producer.log())
        seen = [e["order_id"] for e in _stream(client)]
        assert sorted(seen) == sorted(ids)
        producer.stop()
    finally:
        server.stop(kill=True)
