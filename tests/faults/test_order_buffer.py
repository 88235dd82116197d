"""The order buffer dies with its producer: what it held while Redis was down is recovered by
the next producer's reconciliation (docs/reliability.md, "Order buffer")."""

from __future__ import annotations

from collections import Counter

import pytest
import redis

from alpaca_broker.keys import ORDERS_QUEUE, Keys
from alpaca_broker.redis_server import RedisServer
from simulator.api import Simulator
from tests.harness.faults import order_stream, wait_producer_running
from tests.harness.pipeline import Pipeline
from tests.harness.wait import wait_until

pytestmark = pytest.mark.faults

KEYS = Keys()


@pytest.mark.order_path
def test_order_events_buffered_while_redis_was_down_and_lost_at_exit_are_recovered(
    sim: Simulator, own_redis: RedisServer, own_client: redis.Redis, own_pipeline: Pipeline
) -> None:
    client = own_client
    own_pipeline.worker(queues=ORDERS_QUEUE)
    env = {"RECONCILE_INTERVAL": "3600", "SHUTDOWN_TIMEOUT": "2"}
    first = own_pipeline.producer(streams="orders", **env)
    first.wait_connected("orders")
    order = sim.orders.submit("AAPL", qty="10")["id"]
    wait_until(lambda: client.hget(KEYS.order(order), "status") == "new", 15)

    own_redis.stop()
    sim.orders.fill(order)  # streamed to the producer, held in its buffer: no broker
    wait_until(lambda: sim.stats()["trade_updates"] >= 2, 10, message="the fill was sent")
    assert first.stop() == 0  # the buffer dies with the process
    assert "events unsent" in first.log()

    own_redis.start()
    second = own_pipeline.producer(streams="orders", **env)
    wait_producer_running(second, "orders")
    wait_until(lambda: client.hget(KEYS.order(order), "status") == "filled", 30)
    events = order_stream(client)
    kinds = Counter((e["event"], e["source"]) for e in events if e["order_id"] == order)
    assert kinds == Counter({("new", "stream"): 1, ("fill", "reconciliation"): 1})
