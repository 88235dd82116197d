"""The tasks in a real ``celery worker`` subprocess, sent by name as the producer sends them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery

from alpaca_broker.keys import ORDER_EVENT_TASK, PRICES_BATCH_TASK, Keys
from alpaca_broker.settings import Settings
from celery_app.config import create_app
from tests.harness.wait import wait_until
from tests.tasks.hold_app import HOLDING
from tests.tasks.payloads import one_of_each_type, trade_update
from tests.tasks.test_publisher_prices import Subscriber

pytestmark = pytest.mark.slow

KEYS = Keys("alpaca")
RECEIVED = 1_795_530_600_500_000_000
AAPL_ORDER = "61e69015-8549-4bfd-b9c3-01e75843f47d"


@pytest.fixture
def sender(redis_url: str) -> Iterator[Celery]:
    """A Celery app that only sends, on the test's Redis (as the producer's is)."""
    app = create_app(Settings(REDIS_URL=redis_url, _env_file=None))
    yield app
    app.close()


def send_order(sender: Celery, data: dict[str, Any], received: int = RECEIVED) -> None:
    sender.send_task(ORDER_EVENT_TASK, args=[data, received, "stream"])


def stream_events(client: redis.Redis) -> list[dict[str, Any]]:
    return [json.loads(fields["event"]) for _, fields in client.xrange(KEYS.orders_events)]


def test_prices_and_orders_flow_through_a_real_worker(
    redis_url, redis_client, worker_factory, sender
):
    worker = worker_factory(redis_url, queues="prices,orders")
    prices = Subscriber(redis_client, KEYS.prices_pattern)
    orders = Subscriber(redis_client, KEYS.orders_channel)
    wait_until(lambda: redis_client.pubsub_numpat() >= 2, 5, message="psubscribed")
    try:
        items = [[RECEIVED + i, raw] for i, raw in enumerate(one_of_each_type("AAPL"))]
        items.insert(2, [RECEIVED, {"T": "zz", "S": "AAPL", "t": 0}])
        items.insert(4, [RECEIVED, {"T": "t", "S": "AAPL", "p": 1, "s": 1, "t": "later"}])
        sender.send_task(PRICES_BATCH_TASK, args=[items])
        for name in ("new", "partial_fill", "partial_fill", "fill"):
            send_order(sender, trade_update("AAPL", name))
        send_order(sender, {"event": "fill"})  # malformed: logged, not retried

        wait_until(lambda: len(prices.messages) >= 9, 15, message="9 price messages")
        wait_until(lambda: redis_client.hget(KEYS.order(AAPL_ORDER), "status") == "filled", 15)
        wait_until(lambda: "skipped malformed order event" in worker.log(), 10)  # MalformedReporter
        latest = redis_client.hgetall(KEYS.latest("AAPL"))
        assert len(latest) == 9
        assert sorted(json.loads(data)["type"] for _, data in prices.messages) == sorted(latest)
        assert {channel for channel, _ in prices.messages} == {KEYS.prices("AAPL")}
        assert [e["event"] for e in stream_events(redis_client)] == ["new", "partial_fill", "fill"]
        wait_until(lambda: len(orders.messages) >= 3, 5, message="3 order messages")
        assert len(orders.messages) == 3
        log = worker.log()
        assert "skipped malformed price message: unknown T" in log
        assert "skipped malformed price message: bad timestamp" in log
        assert "Traceback" not in log
    finally:
        prices.close()
        orders.close()


def test_an_order_task_redelivered_after_sigkill_leaves_one_entry(
    redis_url, redis_client, worker_factory, sender
):
    fast_restore = {"CELERY_VISIBILITY_TIMEOUT": "3"}
    first = worker_factory(
        redis_url, app="tests.tasks.hold_app", queues="orders", env=fast_restore, name="first"
    )
    orders = Subscriber(redis_client, KEYS.orders_channel)
    wait_until(lambda: redis_client.pubsub_numpat() >= 1, 5, message="psubscribed")
    try:
        for name in ("new", "partial_fill", "fill"):
            send_order(sender, trade_update("AAPL", name))
        # The first task has published and is held before its late ack: kill it there.
        wait_until(lambda: redis_client.llen(HOLDING) == 1, 15, message="first task held")
        assert redis_client.xlen(KEYS.orders_events) == 1
        first.kill()

        second = worker_factory(redis_url, queues="orders", env=fast_restore, name="second")
        wait_until(lambda: "already published, skipped" in second.log(), 20, message="redelivery")
        wait_until(lambda: redis_client.xlen(KEYS.orders_events) >= 3, 10, message="3 entries")
        wait_until(lambda: len(orders.messages) >= 3, 5, message="3 order messages")
        assert [e["event"] for e in stream_events(redis_client)] == ["new", "partial_fill", "fill"]
        assert [json.loads(m)["event"] for _, m in orders.messages] == [
            "new",
            "partial_fill",
            "fill",
        ]
        assert redis_client.hget(KEYS.order(AAPL_ORDER), "status") == "filled"
        wait_until(lambda: redis_client.hlen("unacked") == 0, 10, message="all acknowledged")
    finally:
        orders.close()
