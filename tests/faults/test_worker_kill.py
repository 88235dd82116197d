"""A worker SIGKILLed mid-work, as an OOM kill would: prices resume on the next worker
(at most once: what the dead worker held is lost), orders lose and double nothing."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from alpaca_broker.keys import ORDERS_QUEUE, PRICES_BATCH_TASK, PRICES_QUEUE, Keys
from alpaca_broker.settings import Settings
from celery_app.config import create_app
from simulator import messages as m
from simulator.api import Simulator
from tests.e2e.test_price_pipeline import ChannelListener
from tests.harness.faults import (
    SHORT_VISIBILITY,
    UNACKED,
    assert_each_emitted_event_published_once,
    assert_order_hashes_match_the_book,
    kill_holding_tasks,
    wait_orders_settled,
    wait_reconciled_once,
)
from tests.harness.pipeline import Pipeline
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


def _price_batch(first_id: int, count: int) -> list[list[Any]]:
    now = time.time_ns()
    # As the producer hands them on: `t` as int ns (the simulator's is a msgpack Timestamp).
    raws = [
        m.trade("AAPL", now + i, trade_id=first_id + i, price=1.0, size=1) for i in range(count)
    ]
    return [[now, {**raw, "t": now + i}] for i, raw in enumerate(raws)]


def _trade_ids(events: list[dict[str, Any]]) -> set[int]:
    return {e["trade_id"] for e in events if e.get("type") == "trade"}


def test_price_worker_sigkilled_mid_batch_loses_exactly_the_batch_in_hand(
    redis_url: str,
    redis_client: redis.Redis,
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    # Prices are at most once: the batch a worker holds dies with it, nothing else does.
    # The worker's pool child is frozen, so the batch in hand is a known one; the prefetch
    # limit (1 per pool process) holds for prices too, so the next batch stays in Redis.
    sender = create_app(Settings(REDIS_URL=redis_url, _env_file=None))
    listener = ChannelListener(redis_client)
    first = worker_factory(redis_url, queues=PRICES_QUEUE, name="prices-a")
    sender.send_task(PRICES_BATCH_TASK, args=[_price_batch(1, 5)])
    wait_until(lambda: _trade_ids(listener.drain()) >= set(range(1, 6)), 20, message="flowing")

    for child in first.children():
        child.send_signal(signal.SIGSTOP)  # the pool stalls; the main process still consumes
    in_hand, queued = _price_batch(100, 5), _price_batch(200, 5)
    sender.send_task(PRICES_BATCH_TASK, args=[in_hand])
    wait_until(lambda: redis_client.llen(PRICES_QUEUE) == 0, 20, message="the batch taken")
    sender.send_task(PRICES_BATCH_TASK, args=[queued])
    for _ in range(3):  # more to take, none taken: the worker holds one batch, no more
        sender.send_task(PRICES_BATCH_TASK, args=[_price_batch(300, 1)])
    with pytest.raises(AssertionError):
        wait_until(lambda: redis_client.llen(PRICES_QUEUE) < 4, 2, message="bounded")
    assert redis_client.llen(PRICES_QUEUE) == 4

    first.kill()
    worker_factory(redis_url, queues=PRICES_QUEUE, name="prices-b")
    wait_until(lambda: redis_client.llen(PRICES_QUEUE) == 0, 20, message="resumed")
    marker = _price_batch(900, 1)
    sender.send_task(PRICES_BATCH_TASK, args=[marker])  # one worker: in queue order
    seen: set[int] = set()

    def marker_seen() -> bool:
        seen.update(_trade_ids(listener.drain()))
        return 900 in seen

    wait_until(marker_seen, 20, message="the marker batch arrives")
    assert seen & {item[1]["i"] for item in in_hand} == set()  # exactly the batch in hand lost
    assert {item[1]["i"] for item in queued} <= seen  # everything else published
    assert 300 in seen
    # Real lag is recorded by the worker itself, not read off a queue depth.
    record = redis_client.hgetall(KEYS.prices_published)
    assert int(record["events"]) == 1
    assert 0 <= int(record["oldest_age_ns"]) < 20 * 10**9


def _orders_worker(pipeline: Pipeline, name: str) -> WorkerProcess:
    return pipeline.worker(queues=ORDERS_QUEUE, name=name, env=SHORT_VISIBILITY)


def _start_orders(pipeline: Pipeline) -> tuple[WorkerProcess, ProducerProcess]:
    """Worker orders-a and an orders producer, connected and past its start-up reconciliation
    (before REST requests are counted by a test)."""
    worker = _orders_worker(pipeline, "orders-a")
    producer = pipeline.producer(streams="orders", RECONCILE_INTERVAL="3600")
    producer.wait_connected("orders")
    wait_reconciled_once(pipeline.sim)
    return worker, producer


@pytest.mark.order_path(every_redis=True)
def test_order_worker_sigkilled_with_tasks_in_flight_loses_and_doubles_no_order_event(
    sim: Simulator, redis_client: redis.Redis, pipeline: Pipeline
) -> None:
    first, _ = _start_orders(pipeline)
    sim.set_order_flow(20)
    wait_until(lambda: redis_client.xlen(KEYS.orders_events) >= 20, 20, message="orders flow")

    assert kill_holding_tasks(first)
    emitted_at_kill = len(sim.orders.events())
    # The flow goes on with no worker: events wait in the queue.
    wait_until(lambda: len(sim.orders.events()) >= emitted_at_kill + 20, 20, message="more events")
    assert redis_client.llen(ORDERS_QUEUE) >= 1

    _orders_worker(pipeline, "orders-b")
    wait_until(
        lambda: len(sim.orders.events()) >= emitted_at_kill + 40, 20, message="flow continues"
    )
    sim.set_order_flow(0)
    wait_orders_settled(sim)

    expected = assert_each_emitted_event_published_once(redis_client, sim)
    assert sum(expected.values()) >= 60
    assert assert_order_hashes_match_the_book(redis_client, sim) >= 10
    wait_until(lambda: redis_client.hlen(UNACKED) == 0, 15, message="every task acknowledged")


@pytest.mark.order_path
def test_order_worker_dead_while_the_trading_socket_reconnects_publishes_each_fill_once(
    sim: Simulator, redis_client: redis.Redis, pipeline: Pipeline
) -> None:
    first, producer = _start_orders(pipeline)
    order = sim.orders.submit("AAPL", qty="10")
    wait_until(lambda: redis_client.hget(KEYS.order(order["id"]), "status") == "new", 15)

    first.kill()
    sim.orders.fill(order["id"])  # streamed; its task waits in the queue
    wait_until(lambda: redis_client.llen(ORDERS_QUEUE) == 1, 10, message="the fill is queued")
    runs = producer.health().get("reconciliation", {}).get("runs", 0)
    sim.drop("trading")  # the producer reconnects and reconciles against a stale hash
    wait_until(
        lambda: (
            producer.health().get("reconciliation", {}).get("runs", 0) > runs
            and producer.stream_state("orders") == "connected"
        ),
        20,
        message="reconnected and reconciled",
    )
    # The hash still says new and REST says filled, but the stream delivered that fill a
    # moment ago: it is on its way, not missed. No REST copy is queued beside it.
    assert producer.health()["reconciliation"]["recovered"] == 0
    assert redis_client.llen(ORDERS_QUEUE) == 1

    _orders_worker(pipeline, "orders-b")
    wait_until(
        lambda: redis_client.hget(KEYS.order(order["id"]), "status") == "filled",
        15,
        message="the fill is published",
    )
    wait_until(lambda: redis_client.llen(ORDERS_QUEUE) == 0, 10, message="the queue drained")
    assert_each_emitted_event_published_once(redis_client, sim)
