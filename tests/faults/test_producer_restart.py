"""The producer SIGKILLed while orders fill, then started again: the new producer's
start-up reconciliation recovers what the gap hid."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest
import redis

from alpaca_broker.keys import Keys
from simulator.api import Simulator
from tests.harness.faults import order_stream, stream_key, wait_producer_running
from tests.harness.pipeline import Pipeline
from tests.harness.producer import ProducerProcess
from tests.harness.wait import wait_until
from tests.harness.workers import WorkerProcess

pytestmark = pytest.mark.faults

KEYS = Keys()
ORDER_ENV = {"RECONCILE_INTERVAL": "3600"}  # reconcile at (re)connect only


def _status(client: redis.Redis, order_id: str) -> str | None:
    status: str | None = client.hget(KEYS.order(order_id), "status")
    return status


def _kill(producer: ProducerProcess, sim: Simulator) -> None:
    assert producer.proc is not None
    producer.proc.kill()
    producer.proc.wait(10)
    wait_until(lambda: sim.stats()["listening"] == 0, 10, message="the trading socket is gone")


@pytest.fixture
def start_producer(
    pipeline: Pipeline, orders_worker: WorkerProcess
) -> Callable[[], ProducerProcess]:
    """Starts an orders producer (the worker runs already)."""
    return lambda: pipeline.producer(streams="orders", **ORDER_ENV)


@pytest.mark.order_path
def test_producer_sigkilled_while_orders_fill_restart_reconciles_the_gap(
    sim: Simulator, redis_client: redis.Redis, start_producer: Callable[[], ProducerProcess]
) -> None:
    first = start_producer()
    first.wait_connected("orders")
    book = sim.orders
    filled, partial, canceled, twice, untouched, progressing = (
        book.submit(symbol, qty="10")["id"]
        for symbol in ("AAPL", "MSFT", "TSLA", "NVDA", "AMD", "SPY")
    )
    book.fill(progressing, qty="4")  # seen partially filled before the kill
    wait_until(
        lambda: (
            _status(redis_client, progressing) == "partially_filled"
            and all(_status(redis_client, o) == "new" for o in (filled, partial, canceled, twice))
        ),
        15,
        message="the orders are known before the kill",
    )
    streamed_before = Counter(stream_key(e) for e in order_stream(redis_client))

    _kill(first, sim)
    # While no producer listens, these reach Alpaca's REST API only.
    book.fill(filled)
    book.fill(partial, qty="3")
    book.cancel(canceled)
    book.fill(twice, qty="5")
    book.fill(twice)  # two events missed; the state they lead to is recovered
    book.fill(progressing)

    second = start_producer()
    wait_producer_running(second, "orders")
    expected = {
        filled: ("filled", "10", "fill"),
        partial: ("partially_filled", "3", "partial_fill"),
        canceled: ("canceled", "0", "canceled"),
        twice: ("filled", "10", "fill"),
        progressing: ("filled", "10", "fill"),
    }
    wait_until(
        lambda: all(_status(redis_client, o) == s for o, (s, _, _) in expected.items()),
        20,
        message=f"the gap recovered\n{second.log()[-2000:]}",
    )
    events = order_stream(redis_client)
    keys = Counter(stream_key(e) for e in events)
    assert max(keys.values()) == 1  # nothing doubled
    assert streamed_before <= keys  # nothing published before the kill went away
    recovered = [e for e in events if e["source"] == "reconciliation"]
    assert sorted((e["order_id"], e["event"]) for e in recovered) == sorted(
        (order_id, event) for order_id, (_, _, event) in expected.items()
    )  # one event per order the gap changed, none for the untouched one
    for event in recovered:
        state, filled_qty, _ = expected[event["order_id"]]
        assert (event["status"], event["filled_qty"], event["execution_id"]) == (
            state, filled_qty, None,
        )  # fmt: skip
        order = book.get(event["order_id"])
        assert order is not None
        assert event["timestamp"].startswith(order["updated_at"].rstrip("Z"))
        held = redis_client.hgetall(KEYS.order(event["order_id"]))
        assert (held["status"], held["filled_qty"]) == (state, filled_qty)
    assert _status(redis_client, untouched) == "new"


@pytest.mark.order_path
def test_an_order_opened_and_closed_while_the_producer_was_dead_is_recovered(
    sim: Simulator, redis_client: redis.Redis, start_producer: Callable[[], ProducerProcess]
) -> None:
    first = start_producer()
    first.wait_connected("orders")
    known = sim.orders.submit("AAPL", qty="1")["id"]
    wait_until(lambda: _status(redis_client, known) == "new", 15)

    _kill(first, sim)
    unseen = sim.orders.submit("MSFT", qty="2")["id"]
    sim.orders.fill(unseen)
    sim.orders.fill(known)

    second = start_producer()
    wait_producer_running(second, "orders")
    wait_until(lambda: _status(redis_client, known) == "filled", 20, message="known recovered")
    wait_until(lambda: _status(redis_client, unseen) == "filled", 5, message="unseen recovered")
