"""A worker SIGKILLed mid-work, as an OOM kill would: prices resume on the next worker
(at most once: what the dead worker held is lost), orders lose and double nothing."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from alpaca_broker.keys import ORDERS_QUEUE, PRICES_QUEUE, Keys
from simulator import messages as m
from simulator.api import Simulator
from simulator.clock import parse_time
from tests.e2e.test_price_pipeline import ChannelListener
from tests.harness.faults import (
    SHORT_VISIBILITY,
    UNACKED,
    assert_each_emitted_event_published_once,
    assert_order_hashes_match_the_book,
    kill_holding_tasks,
    latest_trade_ns,
    wait_handed_off,
    wait_orders_settled,
    wait_reconciled_once,
)
from tests.harness.producer import ProducerProcess
from tests.harness.wait import wait_until
from tests.harness.workers import WorkerProcess

pytestmark = pytest.mark.faults

KEYS = Keys()
SYMBOLS = "AAPL,MSFT"
PRICE_ENV = {"ALPACA_SYMBOLS": SYMBOLS, "ALPACA_DATA_CHANNELS": "trades,quotes"}
SENTINEL_TRADE_ID = 987_654_321


def _counters(producer: ProducerProcess) -> dict[str, Any]:
    prices: dict[str, Any] = producer.health().get("streams", {}).get("prices", {})
    return prices


def test_price_worker_sigkilled_mid_batch_prices_resume_on_the_next_worker(
    sim: Simulator,
    redis_url: str,
    redis_client: redis.Redis,
    worker_factory: Callable[..., WorkerProcess],
    producer_factory: Callable[..., ProducerProcess],
) -> None:
    first = worker_factory(redis_url, queues=PRICES_QUEUE, name="prices-a")
    listener = ChannelListener(redis_client)
    sim.set_market_rate(500)
    sim.set_market(True)
    producer = producer_factory(redis_url, sim, streams="prices", **PRICE_ENV)
    producer.wait_connected("prices")
    wait_until(lambda: len(listener.drain()) > 200, 20, message="prices flow")

    first.kill()  # main process and pool child at once, batches in hand
    killed_ns = time.time_ns()
    sent_at_kill = sim.stats()["market_messages"]
    # With no worker the producer keeps reading and the batches wait in the queue.
    wait_until(lambda: redis_client.llen(PRICES_QUEUE) >= 20, 20, message="batches queue up")
    assert producer.proc is not None
    assert producer.proc.poll() is None

    worker_factory(redis_url, queues=PRICES_QUEUE, name="prices-b")
    wait_until(lambda: any(e["ts_ns"] > killed_ns for e in listener.drain()), 20, message="resumed")
    wait_until(
        lambda: all(latest_trade_ns(redis_client, s) > killed_ns for s in SYMBOLS.split(",")),
        20,
        message="the latest hashes move past the kill",
    )

    # Stop the market, then mark the end: one worker runs batches in queue order, so once
    # the sentinel is out, everything sent before it is too.
    sim.set_market(False)
    sentinel = m.trade("AAPL", time.time_ns(), trade_id=SENTINEL_TRADE_ID, price=1.0, size=1)
    assert sim.push_market([sentinel]) == 1
    wait_until(
        lambda: any(e.get("trade_id") == SENTINEL_TRADE_ID for e in listener.drain()),
        20,
        message="the sentinel arrives",
    )
    sent = sim.stats()["market_messages"]
    events = listener.drain()
    assert len({json.dumps(e, sort_keys=True) for e in events}) == len(events), "doubled"
    # Everything the producer read after the kill was handed to the queue and delivered;
    # only what the dead worker had taken off the queue may be missing (at most once).
    after_kill = [e for e in events if parse_time(e["received_at"]) > killed_ns]
    assert len(after_kill) >= sent - sent_at_kill
    lost = sent - len(events)
    assert 0 <= lost < sent_at_kill
    health = _counters(producer)
    assert (health["dropped"], health["reconnects"]) == (0, 0)
    assert redis_client.llen(PRICES_QUEUE) == 0


def test_order_worker_sigkilled_with_tasks_in_flight_loses_and_doubles_no_order_event(
    sim: Simulator,
    redis_url: str,
    redis_client: redis.Redis,
    worker_factory: Callable[..., WorkerProcess],
    producer_factory: Callable[..., ProducerProcess],
) -> None:
    first = worker_factory(redis_url, queues=ORDERS_QUEUE, name="orders-a", env=SHORT_VISIBILITY)
    producer = producer_factory(redis_url, sim, streams="orders", RECONCILE_INTERVAL="3600")
    producer.wait_connected("orders")
    wait_reconciled_once(sim)
    sim.set_order_flow(20)
    wait_until(lambda: redis_client.xlen(KEYS.orders_events) >= 20, 20, message="orders flow")

    assert kill_holding_tasks(first)
    emitted_at_kill = len(sim.orders.events())
    # The flow goes on with no worker: events wait in the queue.
    wait_until(lambda: len(sim.orders.events()) >= emitted_at_kill + 20, 20, message="more events")
    assert redis_client.llen(ORDERS_QUEUE) >= 1

    worker_factory(redis_url, queues=ORDERS_QUEUE, name="orders-b", env=SHORT_VISIBILITY)
    wait_until(
        lambda: len(sim.orders.events()) >= emitted_at_kill + 40, 20, message="flow continues"
    )
    sim.set_order_flow(0)
    wait_orders_settled(sim)

    expected = assert_each_emitted_event_published_once(redis_client, sim)
    assert sum(expected.values()) >= 60
    assert assert_order_hashes_match_the_book(redis_client, sim) >= 10
    wait_until(lambda: redis_client.hlen(UNACKED) == 0, 15, message="every task acknowledged")


def test_order_worker_dead_while_the_trading_socket_reconnects_publishes_each_fill_once(
    sim: Simulator,
    redis_url: str,
    redis_client: redis.Redis,
    worker_factory: Callable[..., WorkerProcess],
    producer_factory: Callable[..., ProducerProcess],
) -> None:
    first = worker_factory(redis_url, queues=ORDERS_QUEUE, name="orders-a", env=SHORT_VISIBILITY)
    producer = producer_factory(redis_url, sim, streams="orders", RECONCILE_INTERVAL="3600")
    producer.wait_connected("orders")
    wait_reconciled_once(sim)  # the start-up pass, before REST requests are counted below
    order = sim.orders.submit("AAPL", qty="10")
    wait_until(lambda: redis_client.hget(KEYS.order(order["id"]), "status") == "new", 15)

    first.kill()
    sim.orders.fill(order["id"])  # streamed; its task waits in the queue
    wait_until(lambda: redis_client.llen(ORDERS_QUEUE) == 1, 10, message="the fill is queued")
    rest_calls = sim.stats()["connections"].get("rest", 0)
    sim.drop("trading")  # the producer reconnects and reconciles against a stale hash
    # The reconciliation asks REST for the open orders and for the closed ones since its
    # watermark: at least two requests, then whatever it found is handed off.
    wait_until(
        lambda: (
            sim.stats()["connections"].get("rest", 0) >= rest_calls + 2
            and producer.stream_state("orders") == "connected"
        ),
        20,
        message="reconnected and reconciled",
    )
    wait_handed_off(producer, "orders", after=time.time())

    worker_factory(redis_url, queues=ORDERS_QUEUE, name="orders-b", env=SHORT_VISIBILITY)
    wait_until(
        lambda: redis_client.hget(KEYS.order(order["id"]), "status") == "filled",
        15,
        message="the fill is published",
    )
    wait_until(lambda: redis_client.llen(ORDERS_QUEUE) == 0, 10, message="the queue drained")
    assert_each_emitted_event_published_once(redis_client, sim)
