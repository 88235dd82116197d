"""Hot standby producers: two producers with one ``PRODUCER_LEASE``; one holds Alpaca's
sockets, the other takes over when it stops or dies, and no order event is lost or doubled."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import redis

from alpaca_broker.keys import Keys
from alpaca_broker.redis_server import RedisServer
from simulator.api import Simulator
from tests.harness.faults import order_stream, stream_key
from tests.harness.pipeline import Pipeline
from tests.harness.producer import ProducerProcess
from tests.harness.proxy import TcpProxy
from tests.harness.wait import wait_until
from tests.harness.workers import REPO, WorkerProcess, process_env

pytestmark = pytest.mark.faults

KEYS = Keys()
LEASE = "feed"
TTL = 3
#: The settled pair: the lease holder (connected) and the standby.
Pair = tuple[ProducerProcess, ProducerProcess]


def _pair(pipeline: Pipeline) -> dict[str, ProducerProcess]:
    env = {
        "PRODUCER_LEASE": LEASE, "LEASE_TTL": str(TTL), "RECONCILE_INTERVAL": "3600",
        "BAR_BACKFILL_MINUTES": "0",
    }  # fmt: skip
    return {
        name: pipeline.producer(streams="prices,orders", PRODUCER_NAME=name, **env)
        for name in ("a", "b")
    }


def _health(redis_url: str) -> tuple[int, dict[str, Any]]:
    """``alpaca-broker health --json`` for both producers of the set, as an operator runs it."""
    done = subprocess.run(
        [sys.executable, "-m", "alpaca_broker", "health", "--json", "--timeout", "0.2",
         "--producer", "a", "--producer", "b"],
        env=process_env(redis_url, PRODUCER_LEASE=LEASE),
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return done.returncode, json.loads(done.stdout)


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
def pair(pipeline: Pipeline, redis_client: redis.Redis) -> Pair:
    """Two producers on one lease, settled: the holder (connected) and the standby."""
    holder, standby = _holder_and_standby(_pair(pipeline), redis_client)
    holder.wait_connected("prices", "orders")
    return holder, standby


def test_two_producers_with_one_lease_exactly_one_holds_alpaca_sockets(
    sim: Simulator, redis_url: str, redis_client: redis.Redis, pair: Pair
) -> None:
    holder, standby = pair
    assert standby.health()["streams"]["orders"]["state"] != "connected"
    assert sim.stats()["listening"] == 1
    assert _lease(redis_client)["epoch"] >= 1
    assert standby.health()["threads"]["orders"]["thread"] == "standby"
    _, report = _health(redis_url)
    lease = report["leases"][LEASE]
    assert lease["holder"]["holder"] == holder.env["PRODUCER_NAME"]
    assert lease["standbys"] == [standby.env["PRODUCER_NAME"]]
    assert not any("lease" in p for p in report["problems"])

    holder.stop()
    standby.stop()
    code, report = _health(redis_url)
    assert code == 1
    assert (
        f"lease '{LEASE}': no holder (no producer holds Alpaca's connections)" in report["problems"]
    )


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


@pytest.mark.order_path
def test_holder_sigkilled_while_orders_fill_the_standby_takes_over_and_nothing_is_lost(
    sim: Simulator, redis_client: redis.Redis, orders_worker: WorkerProcess, pair: Pair
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
    sim.set_market(True)  # and prices flow through the new holder
    wait_until(lambda: standby.health()["streams"]["prices"]["enqueued"] > 0, 15)


def _prices_pair(
    pipeline_on: Callable[[str], Pipeline], urls: dict[str, str], **env: str
) -> dict[str, ProducerProcess]:
    """Producers a and b on the price stream (one connection per key: a second gets 406), each
    on its Redis URL."""
    common = {"PRODUCER_LEASE": LEASE, "LEASE_TTL": str(TTL), **env}
    return {
        name: pipeline_on(url).producer(streams="prices", PRODUCER_NAME=name, **common)
        for name, url in urls.items()
    }


def _connected_prices_pair(
    pipeline_on: Callable[[str], Pipeline], redis_url: str, client: redis.Redis, wait: float
) -> Pair:
    """Producers a and b on one Redis with ALPACA_CONNECTION_LIMIT_WAIT=``wait``, settled:
    the holder (its price socket connected) and the standby."""
    producers = _prices_pair(
        pipeline_on, {"a": redis_url, "b": redis_url}, ALPACA_CONNECTION_LIMIT_WAIT=str(wait)
    )
    holder, standby = _holder_and_standby(producers, client)
    holder.wait_connected("prices")
    return holder, standby


def test_holder_cut_off_from_redis_closes_its_alpaca_socket_and_the_other_takes_over(
    sim: Simulator,
    redis_url: str,
    redis_client: redis.Redis,
    pipeline_on: Callable[[str], Pipeline],
) -> None:
    target = redis.connection.parse_url(redis_url)
    with TcpProxy((target["host"], target["port"])) as proxy:
        # a reaches Redis only through the proxy; a 406 would cost b a minute, so b connecting
        # quickly proves a closed its socket.
        slow_406 = {"ALPACA_CONNECTION_LIMIT_WAIT": "60"}
        a = _prices_pair(pipeline_on, {"a": proxy.url()}, **slow_406)
        wait_until(lambda: _lease(redis_client).get("holder") == "a", 20, message="a holds")
        a["a"].wait_connected("prices")
        b = _prices_pair(pipeline_on, {"b": redis_url}, **slow_406)
        wait_until(lambda: b["b"].health().get("role") == "standby", 20, message="b waits")
        proxy.cut()
        cut = time.monotonic()
        b["b"].wait_connected("prices", timeout=TTL + 10)
        assert time.monotonic() - cut < TTL + 5
        assert _lease(redis_client)["holder"] == "b"
        assert sim.stats()["errors_sent"].get(406, 0) == 0  # a's socket was gone in time
        assert "lease feed lost" in a["a"].log()


def test_redis_restarted_while_both_run_leaves_exactly_one_holder_and_data_flows(
    sim: Simulator,
    own_redis: RedisServer,
    own_client: redis.Redis,
    pipeline_on: Callable[[str], Pipeline],
) -> None:
    client = own_client
    sim.set_market(True)
    producers = _prices_pair(pipeline_on, {"a": own_redis.url, "b": own_redis.url})
    _holder_and_standby(producers, client)
    own_redis.restart(kill=True)
    holder, _ = _holder_and_standby(producers, client)
    holder.wait_connected("prices", timeout=20)
    before = holder.health()["streams"]["prices"]["enqueued"]
    wait_until(
        lambda: holder.health()["streams"]["prices"]["enqueued"] > before + 10,
        20,
        message="prices flow again",
    )
    assert sim.stats()["sessions"]["data"] == 1


def test_new_holder_waits_out_alpacas_406_window_once_for_a_dead_holders_unreaped_socket(
    sim: Simulator,
    redis_url: str,
    redis_client: redis.Redis,
    pipeline_on: Callable[[str], Pipeline],
) -> None:
    reap, wait = 6.0, 4.0
    holder, standby = _connected_prices_pair(pipeline_on, redis_url, redis_client, wait)
    sim.keep_dead_slots(reap)
    assert holder.proc is not None
    holder.proc.kill()
    killed = time.monotonic()
    standby.wait_connected("prices", timeout=TTL + reap + 2 * wait + 10)
    took = time.monotonic() - killed
    refused = sim.stats()["errors_sent"].get(406, 0)
    assert 1 <= refused <= 2, f"{refused} connection attempts refused: a storm"
    assert took < TTL + reap + 2 * wait * 1.1 + 5


def test_holder_paused_past_its_lease_the_new_holder_connects_once_it_resumes_and_closes(
    sim: Simulator,
    redis_url: str,
    redis_client: redis.Redis,
    pipeline_on: Callable[[str], Pipeline],
) -> None:
    """A SIGSTOPped holder's socket stays open (Alpaca answers the new holder 406); when it runs
    again it steps down, closes its socket and says so: the new holder connects then, not after
    the whole ALPACA_CONNECTION_LIMIT_WAIT (issue 25, item 5)."""
    wait = 60.0
    holder, standby = _connected_prices_pair(pipeline_on, redis_url, redis_client, wait)
    assert holder.proc is not None
    holder.proc.send_signal(signal.SIGSTOP)
    try:
        wait_until(
            lambda: sim.stats()["errors_sent"].get(406, 0) >= 1,
            TTL + 15,
            message="the new holder is refused while the paused one holds the slot",
        )
    finally:
        holder.proc.send_signal(signal.SIGCONT)
    resumed = time.monotonic()
    standby.wait_connected("prices", timeout=wait)
    took = time.monotonic() - resumed
    assert took < wait / 3, f"the new holder waited {took:.1f}s after the old socket closed"
    assert standby.health()["role"] == "active"
