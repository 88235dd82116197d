"""Hot standby producers: two producers with one ``PRODUCER_LEASE``; one holds Alpaca's
sockets, the other takes over when it stops or dies, and no order event is lost or doubled."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import redis

from alpaca_broker.keys import ORDERS_QUEUE, Keys
from simulator.api import Simulator
from tests.harness.faults import order_stream, stream_key
from tests.harness.producer import ProducerProcess
from tests.harness.wait import wait_until
from tests.harness.workers import WorkerProcess

pytestmark = pytest.mark.faults

KEYS = Keys()
LEASE = "feed"
TTL = 3
#: The settled pair: the lease holder (connected) and the standby.
Pair = tuple[ProducerProcess, ProducerProcess]


def _pair(
    factory: Callable[..., ProducerProcess], redis_url: str, sim: Simulator
) -> dict[str, ProducerProcess]:
    env = {"PRODUCER_LEASE": LEASE, "LEASE_TTL": str(TTL), "RECONCILE_INTERVAL": "3600"}
    return {
        name: factory(redis_url, sim, streams="orders", PRODUCER_NAME=name, **env)
        for name in ("a", "b")
    }


def _lease(client: redis.Redis) -> dict[str, Any]:
    raw = client.get(KEYS.lease(LEASE))
    return json.loads(raw) if raw else {}


def _holder_and_standby(
    producers: dict[str, ProducerProcess], client: redis.Redis
) -> tuple[ProducerProcess, ProducerProcess]:
    def settled() -> bool:
        roles = [str(p.health().get("role")) for p in producers.values()]
        holder = _lease(client).get("holder")
        return (
            sorted(roles) == ["active", "standby"]
            and holder is not None
            and (producers[holder].health().get("role") == "active")
        )

    wait_until(settled, 20, message="one active producer and one standby")
    holder = producers[_lease(client)["holder"]]
    standby = next(p for p in producers.values() if p is not holder)
    return holder, standby


@pytest.fixture
def worker(redis_url: str, worker_factory: Callable[..., WorkerProcess]) -> WorkerProcess:
    return worker_factory(redis_url, queues=ORDERS_QUEUE)


@pytest.fixture
def pair(
    sim: Simulator,
    redis_url: str,
    redis_client: redis.Redis,
    producer_factory: Callable[..., ProducerProcess],
) -> Pair:
    """Two producers on one lease, settled: the holder (connected) and the standby."""
    holder, standby = _holder_and_standby(_pair(producer_factory, redis_url, sim), redis_client)
    holder.wait_connected("orders")
    return holder, standby


def test_two_producers_with_one_lease_exactly_one_holds_alpaca_sockets(
    sim: Simulator, redis_client: redis.Redis, pair: Pair
) -> None:
    _, standby = pair
    assert standby.health()["streams"]["orders"]["state"] != "connected"
    assert sim.stats()["listening"] == 1
    assert _lease(redis_client)["epoch"] >= 1
    assert standby.health()["threads"]["orders"]["thread"] == "standby"


def test_holder_stopped_with_sigterm_the_standby_connects_within_3s_of_the_release(
    redis_client: redis.Redis, pair: Pair
) -> None:
    holder, standby = pair
    epoch = _lease(redis_client)["epoch"]
    assert holder.stop() == 0
    released = time.monotonic()
    standby.wait_connected("orders", timeout=10)
    took = time.monotonic() - released
    assert took < 3, f"takeover after SIGTERM took {took:.2f}s"
    lease = _lease(redis_client)
    assert lease["holder"] == standby.env["PRODUCER_NAME"]
    assert lease["epoch"] == epoch + 1


def test_holder_sigkilled_while_orders_fill_the_standby_takes_over_and_nothing_is_lost(
    sim: Simulator, redis_client: redis.Redis, worker: WorkerProcess, pair: Pair
) -> None:
    holder, standby = pair
    book = sim.orders
    orders = [book.submit(symbol, qty="10")["id"] for symbol in ("AAPL", "MSFT", "TSLA")]
    wait_until(
        lambda: all(redis_client.hget(KEYS.order(o), "status") == "new" for o in orders),
        15,
        message="the orders are known before the kill",
    )
    assert holder.proc is not None
    holder.proc.kill()
    killed = time.monotonic()
    holder.proc.wait(10)
    # While nobody listens, these reach REST only: the new holder reconciles them.
    book.fill(orders[0])
    book.fill(orders[1], qty="4")
    book.cancel(orders[2])
    standby.wait_connected("orders", timeout=TTL + 10)
    took = time.monotonic() - killed
    assert took < TTL + 5, f"takeover after SIGKILL took {took:.2f}s"
    expected = {orders[0]: "filled", orders[1]: "partially_filled", orders[2]: "canceled"}
    wait_until(
        lambda: all(redis_client.hget(KEYS.order(o), "status") == s for o, s in expected.items()),
        20,
        message="every order reaches its REST state",
    )
    events = order_stream(redis_client)
    counts = Counter(stream_key(e) for e in events)
    assert all(n == 1 for n in counts.values()), counts
    recovered = Counter(e["order_id"] for e in events if e["source"] == "reconciliation")
    assert recovered == Counter(orders)
