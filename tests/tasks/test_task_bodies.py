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
from tasks import retry as retry_module
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
        self.faults_left = -1  # how many order publications fail before one succeeds
        self.malformed_orders = 0
        self.dead: list[tuple[str, str, Any]] = []

    def publish_prices(self, events: Sequence[PriceEvent]) -> int:
        if self.fault:
            raise self.fault
        self.prices.append(list(events))
        return len(events)

    def publish_order(self, event: OrderEvent) -> OrderResult:
        if self.fault and self.faults_left != 0:
            self.faults_left -= 1
            raise self.fault
        self.orders.append(event)
        return OrderResult(True, True)

    def count_malformed_order(self) -> None:
        self.malformed_orders += 1

    def dead_letter(self, task: str, reason: str, payload: Any) -> None:
        self.dead.append((task, reason, payload))


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakePublisher:
    publisher = FakePublisher()
    monkeypatch.setattr(prices, "get_publisher", lambda: publisher)
    monkeypatch.setattr(orders, "get_publisher", lambda: publisher)
    monkeypatch.setattr(orders, "reset_publisher", lambda: None)
    monkeypatch.setattr(retry_module, "BACKOFF_FIRST", 0.0)  # the backoff, instantly
    monkeypatch.setattr(retry_module, "BACKOFF_MAX", 0.0)
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


def test_order_task_dead_letters_a_malformed_event_with_its_reason_without_raising(fake, caplog):
    assert orders.publish_event.run({"event": "fill"}, RECEIVED_NS, "stream") is False
    assert fake.orders == []
    assert "skipped malformed order event" in caplog.text  # through MalformedReporter
    assert fake.malformed_orders == 1
    ((task, reason, payload),) = fake.dead
    assert task == ORDER_EVENT_TASK
    assert reason.startswith("malformed: order: no order object")
    assert payload == [{"event": "fill"}, RECEIVED_NS, "stream"]


def test_order_task_drops_a_hostile_symbol_once_and_later_events_publish(fake):
    data = trade_update("AAPL", "new")
    data["order"]["symbol"] = {"ts_ns": 99999999999999999999}
    assert orders.publish_event.run(data, RECEIVED_NS, "stream") is False
    assert (fake.orders, fake.malformed_orders) == ([], 1)
    assert orders.publish_event.run(trade_update("AAPL", "fill"), RECEIVED_NS, "stream") is True


def test_order_task_publishes_a_valid_event(fake):
    assert orders.publish_event.run(trade_update("AAPL", "fill"), RECEIVED_NS, "stream") is True
    assert fake.orders[0].order_id == "61e69015-8549-4bfd-b9c3-01e75843f47d"


PASSING_FAULTS = [
    redis.ConnectionError("down"),
    redis.TimeoutError("slow"),
    redis.ReadOnlyError("ro"),
    redis.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."),
    redis.ResponseError("NOREPLICAS Not enough good replicas to write."),
    redis.ResponseError("MISCONF Redis is configured to save RDB snapshots, but ..."),
    # Redis 6.2: a refusal inside the order script is a script error that names it
    redis.ResponseError(
        "Error running script (call to f_0123): @user_script:1: @user_script: 1: "
        "-OOM command not allowed when used memory > 'maxmemory'."
    ),
    redis.ResponseError(
        "Error running script (call to f_0123): @user_script:1: @user_script: 1: "
        "-READONLY You can't write against a read only replica."
    ),
]


@pytest.mark.parametrize("fault", PASSING_FAULTS, ids=repr)
def test_an_order_task_waits_out_a_passing_fault_however_long_and_publishes(fake, fault):
    fake.fault, fake.faults_left = fault, 40  # minutes of backoff: still waited out
    assert orders.publish_event.run(trade_update("AAPL", "fill"), RECEIVED_NS, "stream") is True
    assert len(fake.orders) == 1
    assert fake.dead == []


@pytest.mark.parametrize("fault", PASSING_FAULTS[:3], ids=repr)
def test_passing_redis_faults_of_a_price_task_raise_as_retryable(fake, fault):
    fake.fault = fault
    with pytest.raises(RetryableError):
        prices.publish_batch.run([[RECEIVED_NS, producer_messages()[0]]])


def test_an_order_task_retries_an_unexpected_error_then_publishes(fake):
    fake.fault, fake.faults_left = AttributeError("'NoneType' object has no attribute 'client'"), 3
    assert orders.publish_event.run(trade_update("AAPL", "fill"), RECEIVED_NS, "stream") is True
    assert fake.dead == []


def test_an_order_task_dead_letters_an_error_that_never_passes_and_never_raises(fake):
    fake.fault = redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind")
    data = trade_update("AAPL", "fill")
    assert orders.publish_event.run(data, RECEIVED_NS, "stream") is False
    ((task, reason, payload),) = fake.dead
    assert (task, payload) == (ORDER_EVENT_TASK, [data, RECEIVED_NS, "stream"])
    assert reason.startswith("ResponseError: WRONGTYPE")
    assert fake.orders == []


def test_other_redis_errors_are_not_made_retryable():
    with pytest.raises(redis.ResponseError), retryable_redis_errors():
        raise redis.ResponseError("WRONGTYPE Operation against a key")
