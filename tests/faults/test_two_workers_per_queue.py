"""Two workers on each queue, so that events of one order or one symbol are processed in
parallel and out of order: the order dedupe and both never-regress rules still hold, and when
one worker of each queue is SIGKILLed the other carries on."""

from __future__ import annotations

import copy
import json
import time
from collections import Counter
from typing import Any

import pytest
import redis

from alpaca_broker.keys import ORDERS_QUEUE, PRICES_QUEUE, Keys
from simulator import messages as m
from simulator.api import Simulator
from tests.e2e.test_price_pipeline import ChannelListener
from tests.harness.faults import (
    SHORT_VISIBILITY,
    UNACKED,
    EventKey,
    assert_each_emitted_event_published_once,
    assert_order_hashes_match_the_book,
    envelope_key,
    kill_holding_tasks,
    latest_trade_ns,
    wait_orders_settled,
    wait_reconciled_once,
)
from tests.harness.pipeline import Pipeline
from tests.harness.wait import wait_until
from tests.harness.workers import WorkerProcess

pytestmark = pytest.mark.faults

KEYS = Keys()
SYMBOLS = ("AAPL", "MSFT", "TSLA")
MARKET_RATE = 1000


@pytest.fixture
def two_workers_per_queue(pipeline: Pipeline) -> dict[str, list[WorkerProcess]]:
    return {
        queue: [pipeline.worker(queues=queue, name=f"{queue}-{i}") for i in (1, 2)]
        for queue in (PRICES_QUEUE, ORDERS_QUEUE)
    }


def _ran(worker: WorkerProcess, task: str) -> bool:
    return f"Task {task}[" in worker.log() and "succeeded" in worker.log()


def _late_copy(envelope: dict[str, Any]) -> dict[str, Any]:
    """A distinct event (new execution id) with the envelope's older state."""
    late = copy.deepcopy(envelope)
    late["data"]["execution_id"] = f"late-{late['data']['execution_id']}"
    return late


@pytest.mark.order_path
def test_two_workers_per_queue_keep_order_events_once_and_neither_hash_regresses(
    sim: Simulator,
    redis_client: redis.Redis,
    pipeline: Pipeline,
    two_workers_per_queue: dict[str, list[WorkerProcess]],
) -> None:
    listener = ChannelListener(redis_client)
    sim.set_market_rate(MARKET_RATE)
    sim.set_market(True)
    producer = pipeline.producer(
        ALPACA_SYMBOLS=",".join(SYMBOLS), ALPACA_DATA_CHANNELS="trades,quotes,bars",
        RECONCILE_INTERVAL="3600",
        BAR_BACKFILL_MINUTES="0",  # counts what the stream sends (backfill: test_bar_backfill)
    )  # fmt: skip
    producer.wait_connected("prices", "orders")
    wait_reconciled_once(sim)
    sim.set_order_flow(25)

    # Scripted lifecycles on top of the flow: a duplicate delivery and a late older event.
    book = sim.orders
    extra: Counter[EventKey] = Counter()
    scripted = []
    for symbol in SYMBOLS:
        order = book.submit(symbol, qty="10")
        partial = book.fill(order["id"], qty="4")
        final = book.fill(order["id"])
        sim.push_trade_update(final)  # the stream sends the fill twice: published once
        late = _late_copy(partial)
        sim.push_trade_update(late)  # distinct, but older than the order's state
        extra[envelope_key(late)] += 1
        scripted.append(order["id"])

    # Prices: a newer bar, then older ones, each its own frame (so in different batches).
    now = time.time_ns()
    bars = [
        m.bar("b", "AAPL", now - age, open_=1, high=2, low=1, close=c, volume=1,
              trade_count=1, vwap=1.5)
        for age, c in ((0, 200.0), (120_000_000_000, 100.0), (60_000_000_000, 150.0))
    ]  # fmt: skip
    for bar in bars:
        sim.push_market([bar])

    wait_until(lambda: len(sim.orders.events()) >= 150, 30, interval=0.2, message="order flow")
    sim.set_order_flow(0)
    sim.set_market(False)
    wait_orders_settled(sim)
    assert_each_emitted_event_published_once(redis_client, sim, extra=extra)
    assert assert_order_hashes_match_the_book(redis_client, sim) >= 20
    for order_id in scripted:
        held = redis_client.hgetall(KEYS.order(order_id))
        assert (held["status"], held["filled_qty"]) == ("filled", "10")

    # Every price event once on its channel; each latest hash holds the greatest ts_ns seen.
    sentinel = m.trade("AAPL", time.time_ns(), trade_id=424242, price=1.0, size=1)
    sim.push_market([sentinel])
    sent = sim.stats()["market_messages"]
    wait_until(lambda: len(listener.drain()) >= sent, 30, message="every price event")
    events = listener.drain()
    assert len({json.dumps(e, sort_keys=True) for e in events}) == len(events) == sent
    newest: dict[tuple[str, str], int] = {}
    for event in events:
        slot = (event["symbol"], event["type"])
        newest[slot] = max(newest.get(slot, 0), event["ts_ns"])
    for (symbol, kind), ts_ns in newest.items():
        held = json.loads(redis_client.hget(KEYS.latest(symbol), kind))
        assert held["ts_ns"] == ts_ns, (symbol, kind)
    assert json.loads(redis_client.hget(KEYS.latest("AAPL"), "bar"))["close"] in (200.0, 200)

    # Both workers of each queue did part of the work.
    for queue, task in (
        (PRICES_QUEUE, "prices.publish_batch"),
        (ORDERS_QUEUE, "orders.publish_event"),
    ):
        for worker in two_workers_per_queue[queue]:
            assert _ran(worker, task), f"{worker.argv} ran no {task}"
    listener.pubsub.close()


@pytest.mark.order_path
def test_one_of_two_workers_per_queue_sigkilled_the_other_carries_on_and_nothing_doubles(
    sim: Simulator, redis_client: redis.Redis, pipeline: Pipeline
) -> None:
    prices = [pipeline.worker(queues=PRICES_QUEUE, name=f"prices-{i}") for i in (1, 2)]
    orders = [
        pipeline.worker(queues=ORDERS_QUEUE, name=f"orders-{i}", env=SHORT_VISIBILITY)
        for i in (1, 2)
    ]
    listener = ChannelListener(redis_client)
    sim.set_market_rate(500)
    sim.set_market(True)
    producer = pipeline.producer(
        ALPACA_SYMBOLS=",".join(SYMBOLS), ALPACA_DATA_CHANNELS="trades", RECONCILE_INTERVAL="3600"
    )
    producer.wait_connected("prices", "orders")
    wait_reconciled_once(sim)
    sim.set_order_flow(20)
    wait_until(lambda: redis_client.xlen(KEYS.orders_events) >= 20, 20, message="orders flow")
    wait_until(lambda: len(listener.drain()) > 200, 20, message="prices flow")

    # One worker of each queue dies with work in hand; nobody restarts it.
    assert kill_holding_tasks(orders[0])
    prices[0].kill()
    killed_ns = time.time_ns()
    sent_at_kill = sim.stats()["market_messages"]
    emitted_at_kill = len(sim.orders.events())

    # The survivors carry on: prices move past the kill, the order flow is published, and
    # the dead order worker's tasks come back (visibility timeout) to the other one.
    wait_until(
        lambda: all(latest_trade_ns(redis_client, s) > killed_ns for s in SYMBOLS),
        20,
        message="prices resume",
    )
    wait_until(
        lambda: len(sim.orders.events()) >= emitted_at_kill + 40, 20, message="more order events"
    )
    sim.set_order_flow(0)
    sim.set_market(False)
    wait_orders_settled(sim)
    assert_each_emitted_event_published_once(redis_client, sim)
    assert assert_order_hashes_match_the_book(redis_client, sim) >= 10
    wait_until(lambda: redis_client.hlen(UNACKED) == 0, 15, message="every task acknowledged")
    assert _ran(orders[1], "orders.publish_event")

    # Prices: nothing doubled; only what the dead worker had taken may be missing.
    sentinel = m.trade("AAPL", time.time_ns(), trade_id=424243, price=1.0, size=1)
    sim.push_market([sentinel])
    wait_until(
        lambda: any(e.get("trade_id") == 424243 for e in listener.drain()), 20, message="sentinel"
    )
    # Keeping up is the lag the workers record, not an empty queue (a prefork worker could
    # hold the backlog in memory): the sentinel's batch was published within seconds.
    record = redis_client.hgetall(KEYS.prices_published)
    assert int(record["oldest_age_ns"]) < 10 * 10**9
    events = listener.drain()
    sent = sim.stats()["market_messages"]
    assert len({json.dumps(e, sort_keys=True) for e in events}) == len(events), "doubled"
    assert 0 <= sent - len(events) < sent_at_kill
    listener.pubsub.close()
