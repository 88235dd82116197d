"""Redis through Sentinel: the primary SIGKILLed under load, Sentinel promotes the replica,
and no process restarts. Also: a whole order worker SIGKILLed, with the default settings."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from alpaca_broker.keys import ORDERS_QUEUE, Keys
from alpaca_broker.redis_client import connect
from alpaca_broker.redis_server import Flavor
from alpaca_broker.settings import Settings
from simulator.api import Simulator
from tests.harness.faults import (
    assert_each_emitted_event_published_once,
    assert_order_hashes_match_the_book,
    kill_holding_tasks,
    order_stream,
    wait_orders_settled,
    wait_reconciled_once,
)
from tests.harness.producer import ProducerProcess
from tests.harness.sentinel import SentinelCluster
from tests.harness.wait import wait_until
from tests.harness.workers import REPO, WorkerProcess, process_env

pytestmark = pytest.mark.faults

KEYS = Keys()
PRICE_ENV = {"ALPACA_SYMBOLS": "AAPL,MSFT", "ALPACA_DATA_CHANNELS": "trades,quotes"}
PRICES_BACK_WITHIN_S = 15.0
_SUCCEEDED = re.compile(r"Task [\w.]+\[([0-9a-f-]+)\] succeeded")
ORDERS_BACK_WITHIN_S = 30.0


def succeeded_tasks(worker: WorkerProcess) -> set[str]:
    """IDs of the tasks ``worker`` logged as succeeded."""
    return set(_SUCCEEDED.findall(worker.log()))


@pytest.fixture
def cluster(tmp_path: Path, redis_flavor: Flavor) -> Iterator[SentinelCluster]:
    started = SentinelCluster(tmp_path / "sentinel", redis_flavor).start()
    yield started
    started.stop()


def _through_sentinel(cluster: SentinelCluster) -> redis.Redis:
    settings = Settings(_env_file=None, **cluster.env)  # type: ignore[arg-type]
    return connect(settings, decode_responses=True, socket_timeout=5)


def _stack(
    cluster: SentinelCluster,
    sim: Simulator,
    worker_factory: Callable[..., WorkerProcess],
    producer_factory: Callable[..., ProducerProcess],
) -> tuple[ProducerProcess, list[WorkerProcess]]:
    url = cluster.env["REDIS_URL"]
    workers = [
        worker_factory(url, queues="prices", name="prices", env=cluster.env),
        worker_factory(url, queues="orders", name="orders", env=cluster.env),
    ]
    producer = producer_factory(url, sim, streams="prices,orders", **PRICE_ENV, **cluster.env)
    producer._redis = _through_sentinel(cluster)  # its heartbeat, read through Sentinel
    producer.wait_connected("prices", "orders")
    wait_reconciled_once(sim)
    return producer, workers


def _nothing_restarted(producer: ProducerProcess, workers: list[WorkerProcess]) -> None:
    """The producer's and the workers' main processes are the ones started."""
    for proc in [producer.proc, *(worker.proc for worker in workers)]:
        assert proc is not None
        assert proc.poll() is None


def _first_price_on(node_client: redis.Redis, timeout: float) -> float:
    """Seconds until a price event arrives on a channel of ``node_client``'s server."""
    pubsub = node_client.pubsub(ignore_subscribe_messages=True)
    pubsub.psubscribe(KEYS.prices_pattern)
    started = time.monotonic()
    wait_until(lambda: pubsub.get_message(timeout=0.05), timeout, message="a price published")
    pubsub.close()
    return time.monotonic() - started


@pytest.mark.order_path(every_redis=True)
@pytest.mark.parametrize("old_primary_returns", [False, True], ids=["gone", "back-as-replica"])
def test_primary_sigkilled_under_load_prices_resume_and_each_order_event_lands_once(
    sim: Simulator,
    cluster: SentinelCluster,
    worker_factory: Callable[..., WorkerProcess],
    producer_factory: Callable[..., ProducerProcess],
    old_primary_returns: bool,
) -> None:
    producer, workers = _stack(cluster, sim, worker_factory, producer_factory)
    client = _through_sentinel(cluster)
    sim.set_market_rate(200)
    sim.set_market(True)
    sim.set_order_flow(20)
    wait_until(lambda: client.xlen(KEYS.orders_events) >= 20, 30, message="orders flow")
    _first_price_on(cluster.primary.client(), 10)

    promoted_at = cluster.kill_primary()
    # Prices reach their channels on the new primary within 15 s of the promotion.
    waited = _first_price_on(cluster.primary.client(), PRICES_BACK_WITHIN_S)
    flowing_after = time.monotonic() - promoted_at
    assert flowing_after <= PRICES_BACK_WITHIN_S
    print(f"\nfailover-to-flowing: {flowing_after:.2f}s (subscribed {waited:.2f}s)")
    if old_primary_returns:
        cluster.restart_old()
    emitted_at_promotion = len(sim.orders.events())
    wait_until(
        lambda: len(sim.orders.events()) >= emitted_at_promotion + 20, 30, message="more orders"
    )
    sim.set_order_flow(0)
    wait_orders_settled(sim, timeout=30)

    # Every distinct order event before, during and after: exactly once; hashes final.
    expected = assert_each_emitted_event_published_once(client, sim, timeout=60)
    assert sum(expected.values()) >= 40
    assert assert_order_hashes_match_the_book(client, sim) >= 5
    if old_primary_returns:  # no split brain: the returned node holds the same stream
        replica = cluster.replica.client(decode_responses=True)
        wait_until(
            lambda: order_stream(replica) == order_stream(client), 20, message="replica in sync"
        )
    _nothing_restarted(producer, workers)


@pytest.mark.order_path
def test_tail_orders_keeps_printing_across_a_failover(
    sim: Simulator,
    cluster: SentinelCluster,
    worker_factory: Callable[..., WorkerProcess],
    producer_factory: Callable[..., ProducerProcess],
    tmp_path: Path,
) -> None:
    producer, workers = _stack(cluster, sim, worker_factory, producer_factory)
    client = _through_sentinel(cluster)
    out = (tmp_path / "tail.out").open("w+")
    env = process_env(cluster.env["REDIS_URL"], **cluster.env)
    tail = subprocess.Popen(
        [sys.executable, "-m", "alpaca_broker", "tail", "orders"],
        cwd=REPO,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    try:
        sim.set_order_flow(20)

        def printed() -> int:
            return len((tmp_path / "tail.out").read_text().splitlines())

        wait_until(lambda: printed() >= 5, 30, message="tail prints")
        cluster.kill_primary()
        at_promotion = client.xlen(KEYS.orders_events)
        wait_until(lambda: client.xlen(KEYS.orders_events) >= at_promotion + 10, 30, message="more")
        sim.set_order_flow(0)
        wait_orders_settled(sim, timeout=30)
        assert_each_emitted_event_published_once(client, sim, timeout=60)
        events = [fields["event"] for _, fields in client.xrange(KEYS.orders_events)]
        after = set(events[at_promotion:])

        def printed_after_failover() -> bool:
            return bool(set((tmp_path / "tail.out").read_text().splitlines()) & after)

        wait_until(printed_after_failover, 30, message="tail printed after the failover")
        lines = (tmp_path / "tail.out").read_text().splitlines()
        assert tail.poll() is None, lines[-5:]
        assert len(lines) == len(set(lines))  # nothing printed twice
        assert set(lines) <= set(events)
        _nothing_restarted(producer, workers)
    finally:
        tail.terminate()
        tail.wait(10)
        out.close()


@pytest.mark.order_path
def test_order_worker_sigkilled_with_its_process_group_its_orders_land_within_30s_by_default(
    sim: Simulator,
    redis_url: str,
    redis_client: redis.Redis,
    worker_factory: Callable[..., WorkerProcess],
    producer_factory: Callable[..., ProducerProcess],
) -> None:
    # Default settings: no CELERY_VISIBILITY_TIMEOUT given. One process: a worker at its
    # prefetch limit has no BRPOP outstanding. With a free slot, a task pushed while the
    # harness holds the worker frozen before the kill is popped by Redis into the frozen
    # consumer's socket, never recorded as unacked, and lost with it: kombu's Redis
    # transport pops first and records after (docs/reliability.md, the residual window).
    # SIGSTOP stretches that sub-millisecond window to the whole freeze.
    first = worker_factory(redis_url, queues="orders", name="orders-a", concurrency=1)
    producer = producer_factory(redis_url, sim, streams="orders", RECONCILE_INTERVAL="3600")
    producer.wait_connected("orders")
    wait_reconciled_once(sim)
    sim.set_order_flow(20)
    wait_until(lambda: redis_client.xlen(KEYS.orders_events) >= 10, 20, message="orders flow")

    held = kill_holding_tasks(first)
    assert held
    assert redis_client.hlen("unacked") >= 1  # the dead worker's tasks, unacknowledged
    sim.set_order_flow(0)
    wait_orders_settled(sim, timeout=30)

    second = worker_factory(redis_url, queues="orders", name="orders-b")
    started = time.monotonic()
    assert_each_emitted_event_published_once(redis_client, sim, timeout=ORDERS_BACK_WITHIN_S)
    # The stream alone proves little: the dead worker may have published a held event and
    # died before its ack. The held tasks themselves must come back (visibility timeout, then
    # the next restore sweep), run on the new worker, and leave nothing unacknowledged, all
    # within 30 s of the new worker being up.
    wait_until(
        lambda: held <= succeeded_tasks(second) and redis_client.hlen("unacked") == 0,
        max(0.0, ORDERS_BACK_WITHIN_S - (time.monotonic() - started)),
        message="the dead worker's tasks run again and acknowledged",
    )
    took = time.monotonic() - started
    print(f"\ndead worker's tasks run and acknowledged {took:.1f}s after the new worker was up")
    assert took <= ORDERS_BACK_WITHIN_S
    assert_each_emitted_event_published_once(redis_client, sim, timeout=5)  # still once each
    assert assert_order_hashes_match_the_book(redis_client, sim) >= 5


def test_health_shows_the_primary_the_replicas_lag_and_the_sentinels_reached(
    cluster: SentinelCluster,
) -> None:
    env = process_env(cluster.env["REDIS_URL"], **cluster.env)
    done = subprocess.run(
        [sys.executable, "-m", "alpaca_broker", "health", "--json", "--timeout", "0.2"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    report = json.loads(done.stdout)["sentinel"]
    assert report["primary"] == cluster.primary.address
    assert report["sentinels_reached"] == [s.address for s in cluster.sentinels]
    [replica] = report["replicas"]
    assert replica["address"] == cluster.replica.address
    assert replica["state"] == "online"
    assert replica["lag_s"] <= 1
    assert replica["behind_bytes"] >= 0
    cluster.sentinels[0].kill()
    done = subprocess.run(
        [sys.executable, "-m", "alpaca_broker", "health"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert f"primary {cluster.primary.address}; sentinels reached 2 of 3" in done.stdout


@pytest.mark.order_path
def test_broker_url_equal_to_redis_url_follows_the_failover_and_each_order_event_lands_once(
    sim: Simulator,
    cluster: SentinelCluster,
    worker_factory: Callable[..., WorkerProcess],
    producer_factory: Callable[..., ProducerProcess],
) -> None:
    # An operator who writes the broker out names the same Redis as REDIS_URL (the primary as
    # it is now). The Celery broker must still find the primary through the Sentinels: a
    # static URL keeps sending and consuming tasks on the old host after the failover.
    url = f"redis://127.0.0.1:{cluster.primary_port}/0"
    env = {**cluster.env, "REDIS_URL": url, "CELERY_BROKER_URL": url}
    worker = worker_factory(url, queues="orders", name="orders", env=env)
    producer = producer_factory(url, sim, streams="orders", RECONCILE_INTERVAL="3600", **env)
    producer._redis = _through_sentinel(cluster)  # its heartbeat, read through Sentinel
    producer.wait_connected("orders")
    wait_reconciled_once(sim)
    client = _through_sentinel(cluster)
    sim.set_order_flow(20)
    wait_until(lambda: client.xlen(KEYS.orders_events) >= 10, 30, message="orders flow")

    cluster.kill_primary()
    emitted_at_promotion = len(sim.orders.events())
    wait_until(
        lambda: len(sim.orders.events()) >= emitted_at_promotion + 10, 30, message="more orders"
    )
    sim.set_order_flow(0)
    wait_orders_settled(sim, timeout=30)

    # The orders emitted after the promotion went through the broker on the new primary:
    # every distinct event is there exactly once, nothing left queued or unacknowledged.
    expected = assert_each_emitted_event_published_once(client, sim, timeout=ORDERS_BACK_WITHIN_S)
    assert sum(expected.values()) >= 20
    new_primary = cluster.primary.client(decode_responses=True)
    wait_until(
        lambda: new_primary.llen(ORDERS_QUEUE) == 0 and new_primary.hlen("unacked") == 0,
        ORDERS_BACK_WITHIN_S,
        message="the orders queue drained and acknowledged on the new primary",
    )
    _nothing_restarted(producer, [worker])
