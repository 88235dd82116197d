"""A 406 storm: Alpaca still holds the key's one connection slot (a half-dead session it has
not reaped yet). The producer waits ``ALPACA_CONNECTION_LIMIT_WAIT`` between attempts
instead of hammering, then connects and data flows."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable

import pytest
import redis

from alpaca_broker.keys import PRICES_QUEUE
from simulator import messages as m
from simulator.api import Simulator
from tests.e2e.test_price_pipeline import ChannelListener
from tests.harness.producer import TEST_KEY, ProducerProcess
from tests.harness.wait import wait_until
from tests.harness.workers import WorkerProcess

pytestmark = pytest.mark.faults

LIMIT_WAIT = 2.0
PRICE_ENV = {
    "ALPACA_SYMBOLS": "AAPL",
    "ALPACA_DATA_CHANNELS": "trades",
    "ALPACA_CONNECTION_LIMIT_WAIT": str(LIMIT_WAIT),
}
RETRY = re.compile(r"prices stream: connect failed \((.*)\); retrying in ([0-9.]+)s")


def _limit_retries(producer: ProducerProcess) -> list[float]:
    """The delays the producer chose after each 406 (from its log)."""
    return [
        float(delay)
        for reason, delay in RETRY.findall(producer.log())
        if "connection limit exceeded" in reason
    ]


def _subscribed(sim: Simulator) -> bool:
    return any("AAPL" in row.get("trades", []) for row in sim.subscriptions())


def _data_flows(sim: Simulator, listener: ChannelListener, trade_id: int) -> None:
    sim.push_market([m.trade("AAPL", time.time_ns(), trade_id=trade_id, price=1.0, size=1)])
    wait_until(
        lambda: any(e.get("trade_id") == trade_id for e in listener.drain()),
        15,
        message="a trade after the storm",
    )


@pytest.fixture
def listener(
    redis_url: str, redis_client: redis.Redis, worker_factory: Callable[..., WorkerProcess]
) -> ChannelListener:
    worker_factory(redis_url, queues=PRICES_QUEUE)
    return ChannelListener(redis_client)


def test_406_while_the_slot_is_held_waits_the_limit_window_then_connects(
    sim: Simulator,
    redis_url: str,
    listener: ChannelListener,
    producer_factory: Callable[..., ProducerProcess],
) -> None:
    held_for = 5.0
    sim.hold_slot(TEST_KEY, "iex", held_for)
    held_at = time.monotonic()
    producer = producer_factory(redis_url, sim, streams="prices", **PRICE_ENV)
    wait_until(lambda: _subscribed(sim), held_for + 3 * LIMIT_WAIT, message=producer.log())
    assert time.monotonic() - held_at >= held_for

    stats = sim.stats()
    refused = stats["errors_sent"].get(406, 0)
    delays = _limit_retries(producer)
    assert refused >= 2
    assert len(delays) == refused
    # Each retry waited the configured window (plus up to 10 % jitter), never less.
    assert all(LIMIT_WAIT <= d <= LIMIT_WAIT * 1.1 + 0.05 for d in delays), delays
    # Bounded: one attempt per window while the slot was held, then the one that got in.
    assert stats["auth_attempts"]["data"] <= math.ceil(held_for / LIMIT_WAIT) + 1
    assert stats["auth_attempts"]["data"] == refused + 1
    producer.wait_connected("prices")
    _data_flows(sim, listener, trade_id=406)


def test_406_storm_after_an_abrupt_drop_waits_out_the_reaping_window_then_data_flows(
    sim: Simulator,
    redis_url: str,
    listener: ChannelListener,
    producer_factory: Callable[..., ProducerProcess],
) -> None:
    producer = producer_factory(redis_url, sim, streams="prices", **PRICE_ENV)
    producer.wait_connected("prices")
    wait_until(lambda: _subscribed(sim), 10)
    _data_flows(sim, listener, trade_id=1)

    reap = 4.0
    sim.set_reap_seconds(reap)
    attempts = sim.stats()["auth_attempts"]["data"]
    dropped_at = time.monotonic()
    assert sim.drop("data") == 1  # no close frame: Alpaca keeps the slot until it reaps it
    wait_until(lambda: sim.stats()["errors_sent"].get(406, 0) >= 1, 10, message="406")
    wait_until(lambda: _subscribed(sim), reap + 3 * LIMIT_WAIT, message=producer.log())
    assert time.monotonic() - dropped_at >= reap

    stats = sim.stats()
    delays = _limit_retries(producer)
    assert len(delays) == stats["errors_sent"][406]
    assert all(LIMIT_WAIT <= d <= LIMIT_WAIT * 1.1 + 0.05 for d in delays), delays
    assert stats["auth_attempts"]["data"] - attempts <= math.ceil(reap / LIMIT_WAIT) + 1
    producer.wait_connected("prices")
    assert producer.health()["streams"]["prices"]["reconnects"] == 1
    _data_flows(sim, listener, trade_id=2)
