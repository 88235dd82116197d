"""The task bodies in-process, with the publisher replaced: what reaches it, what is retried."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
import redis

from alpaca_broker.errors import RetryableError
from alpaca_broker.keys import ORDER_EVENT_TASK, PRICES_BATCH_TASK
from alpaca_broker.schema import EVENT_TYPES
from celery_app.config import ORDER_POLICY, PRICE_POLICY, create_app
from tasks import orders, prices
from tasks.order_events import OrderEvent
from tasks.price_events import PriceEvent
from tasks.publisher import OrderResult
from tasks.retry import retryable_redis_errors
from tests.tasks.payloads import RECEIVED_NS, producer_messages, trade_update


class FakePublisher:
    def __init__(self, fault: Exception | None = None) -> None:
        self.prices: list[list[PriceEvent]] = []
        self.orders: list[OrderEvent] = []
        self.fault = fault
        self.malformed_orders = 0

    def publish_prices(self, events: Sequence[PriceEvent]) -> int:
        if self.fault:
            raise self.fault
        self.prices.append(list(events))
        return len(events)

    def publish_order(self, event: OrderEvent) -> OrderResult:
        if self.fault:
            raise self.fault
        self.orders.append(event)
        return OrderResult(True, True)

    def count_malformed_order(self) -> None:
        self.malformed_orders += 1


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakePublisher:
    publisher = FakePublisher()
    monkeypatch.setattr(prices, "get_publisher", lambda: publisher)
    monkeypatch.setattr(orders, "get_publisher", lambda: publisher)
    return publisher


def test_tasks_are_registered_by_name_with_their_delivery_policy():
    # The shared tasks resolve through the current app: make it the project's (alone, this
    # test otherwise saw Celery's default app, with no delivery policy).
    create_app().set_current()
    assert prices.publish_batch.name == PRICES_BATCH_TASK
    assert orders.publish_event.name == ORDER_EVENT_TASK
    assert orders.publish_event.acks_late is ORDER_POLICY["acks_late"] is True
    assert orders.publish_event.reject_on_worker_lost is True
    assert prices.publish_batch.acks_late is PRICE_POLICY["acks_late"] is False


def test_price_task_publishes_the_valid_items_and_skips_the_malformed(fake, caplog):
    items: list[Any] = [[RECEIVED_NS, msg] for msg in producer_messages()]
    items.insert(0, [RECEIVED_NS, {"T": "n", "S": "X", "t": 0}])
    items.append("garbage")
    assert prices.publish_batch.run(items) == len(items) - 2
    (published,) = fake.prices
    assert [e.type for e in published] == [EVENT_TYPES[m["T"]] for m in producer_messages()]
    assert "skipped malformed price message: unknown T" in caplog.text


def test_order_task_drops_a_malformed_event_without_raising(fake, caplog):
    assert orders.publish_event.run({"event": "fill"}, RECEIVED_NS, "stream") is False
    assert fake.orders == []
    assert "skipped malformed order event" in caplog.text  # through MalformedReporter
    assert fake.malformed_orders == 1


def test_order_task_drops_a_hostile_symbol_once_and_later_events_publish(fake):
    data = trade_update("AAPL", "new")
    data["order"]["symbol"] = {"ts_ns": 99999999999999999999}
    assert orders.publish_event.run(data, RECEIVED_NS, "stream") is False
    assert (fake.orders, fake.malformed_orders) == ([], 1)
    assert orders.publish_event.run(trade_update("AAPL", "fill"), RECEIVED_NS, "stream") is True


def test_order_task_publishes_a_valid_event(fake):
    assert orders.publish_event.run(trade_update("AAPL", "fill"), RECEIVED_NS, "stream") is True
    assert fake.orders[0].order_id == "61e69015-8549-4bfd-b9c3-01e75843f47d"


@pytest.mark.parametrize(
    "fault", [redis.ConnectionError("down"), redis.TimeoutError("slow"), redis.ReadOnlyError("ro")]
)
def test_passing_redis_faults_raise_as_retryable(fake, fault):
    fake.fault = fault
    with pytest.raises(RetryableError):
        orders.publish_event.run(trade_update("AAPL", "fill"), RECEIVED_NS, "stream")
    with pytest.raises(RetryableError):
        prices.publish_batch.run([[RECEIVED_NS, producer_messages()[0]]])


def test_other_redis_errors_are_not_made_retryable():
    with pytest.raises(redis.ResponseError), retryable_redis_errors():
        raise redis.ResponseError("WRONGTYPE Operation against a key")
