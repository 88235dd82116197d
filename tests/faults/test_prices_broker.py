"""Prices on a broker of their own (``CELERY_PRICES_BROKER_URL``, a Redis without AOF): the
price tasks go there, the order tasks stay on the output Redis with its AOF, ``health`` sees
both, and the prices broker dying stops no order event."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from alpaca_broker.keys import ORDERS_QUEUE, PRICES_QUEUE, Keys
from alpaca_broker.redis_server import RedisServer
from simulator.api import Simulator
from tests.e2e.test_price_pipeline import ChannelListener
from tests.harness.faults import assert_each_emitted_event_published_once, wait_orders_settled
from tests.harness.pipeline import Pipeline
from tests.harness.wait import wait_until
from tests.harness.workers import REPO, process_env

pytestmark = pytest.mark.faults

KEYS = Keys()


@pytest.fixture
def prices_broker(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "prices-broker", aof=False)
    server.start()
    yield server
    server.stop(kill=True)


def _calls(client: redis.Redis, command: str) -> int:
    stats: dict[str, Any] = client.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


def _health(redis_url: str, env: dict[str, str]) -> tuple[int, dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-m", "alpaca_broker", "health", "--json"],
        env=process_env(redis_url, **env),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode in (0, 1), done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return done.returncode, report


def test_prices_broker_of_their_own_carries_the_price_tasks_and_its_death_stops_no_order_event(
    sim: Simulator,
    own_redis: RedisServer,
    own_client: redis.Redis,
    own_pipeline: Pipeline,
    prices_broker: RedisServer,
) -> None:
    client = own_client
    env = {"CELERY_PRICES_BROKER_URL": prices_broker.url}
    own_pipeline.worker(queues=PRICES_QUEUE, name="prices", env=env)
    own_pipeline.worker(queues=ORDERS_QUEUE, name="orders", env=env)
    sim.set_market_rate(200)
    sim.set_market(True)
    producer = own_pipeline.producer(
        ALPACA_SYMBOLS="AAPL,MSFT", ALPACA_DATA_CHANNELS="trades,quotes",
        RECONCILE_INTERVAL="3600", **env,
    )  # fmt: skip
    producer.wait_connected("prices", "orders")
    sim.set_order_flow(5)
    listener = ChannelListener(client)
    wait_until(lambda: len(listener.drain()) > 100, 20, message="prices flow")
    wait_until(lambda: client.xlen(KEYS.orders_events) >= 5, 20, message="orders flow")

    # The price tasks went through the prices broker; the order tasks through the output
    # Redis, which never saw a price task (its LPUSHes are the order tasks').
    prices = redis.Redis.from_url(prices_broker.url)
    assert _calls(prices, "lpush") >= 10
    assert _calls(client, "lpush") < client.xlen(KEYS.orders_events) + 10

    def healthy() -> dict[str, Any] | None:
        code, report = _health(own_redis.url, env)
        return report if code == 0 else None

    report: dict[str, Any] = wait_until(healthy, 30, message="health exits 0 with both workers")
    served = {q for queues in report["workers"].values() for q in queues}
    assert served == {PRICES_QUEUE, ORDERS_QUEUE}
    assert set(report["queues"]["depth"]) == {PRICES_QUEUE, ORDERS_QUEUE}

    # The prices broker dies: health names it, and order events keep arriving, each once.
    prices_broker.stop(kill=True)
    before = client.xlen(KEYS.orders_events)
    code, report = _health(own_redis.url, env)
    assert code == 1
    assert any(
        p.startswith("a queue's broker is unreachable: ") and str(prices_broker.port) in p
        for p in report["problems"]
    ), report["problems"]
    wait_until(
        lambda: client.xlen(KEYS.orders_events) >= before + 10,
        30,
        message=f"order events while the prices broker is down\n{producer.log()[-3000:]}",
    )
    # Back (empty: it keeps no AOF), prices flow again without a restart of any process.
    prices_broker.start()
    restarted_ns = time.time_ns()
    wait_until(
        lambda: any(e["ts_ns"] > restarted_ns for e in listener.drain()),
        40,
        message=f"prices resume\n{producer.log()[-3000:]}",
    )
    listener.pubsub.close()
    sim.set_order_flow(0)
    wait_orders_settled(sim)
    assert_each_emitted_event_published_once(client, sim)
