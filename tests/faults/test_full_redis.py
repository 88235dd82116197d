"""A full Redis (``maxmemory`` with ``noeviction``) loses no order event (issue 18, item 1).

Real Valkey servers with a small ``maxmemory``, real subprocess workers: the output Redis
full while a worker publishes, and a broker so full that kombu cannot record the task it
has just taken off the queue. Each time, freeing memory publishes the event exactly once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import redis

from alpaca_broker.keys import ORDERS_QUEUE, Keys
from alpaca_broker.redis_server import RedisServer
from tests.harness.faults import UNACKED, fill_event, send_order, wait_published_once
from tests.harness.wait import wait_until
from tests.harness.workers import WorkerProcess

pytestmark = pytest.mark.faults

KEYS = Keys()
JUNK = "junk:"
HEADROOM = 4 * 1024 * 1024


@pytest.fixture
def small_redis(own_redis: RedisServer) -> Iterator[redis.Redis]:
    """The test's own Valkey, limited to its current use plus a few MB, never evicting."""
    client = redis.Redis.from_url(own_redis.url, decode_responses=True)
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", int(client.info("memory")["used_memory"]) + HEADROOM)
    yield client
    client.close()


def fill(client: redis.Redis) -> int:
    """Write 64 KB values until Redis refuses one (out of memory); returns how many fit.

    Then the limit drops 1 MB below what is used, so that every write stays refused (right
    at the limit, background buffers draining let the odd write through) until :func:`free`.
    """
    value = "x" * 65_536
    for i in range(10_000):
        try:
            client.set(f"{JUNK}{i}", value)
        except redis.exceptions.OutOfMemoryError:
            used = int(client.info("memory")["used_memory"])
            client.config_set("maxmemory", used - 1024 * 1024)
            return i
    raise AssertionError("Redis never filled up: is maxmemory set?")


def free(client: redis.Redis) -> None:
    for key in client.scan_iter(f"{JUNK}*", count=1000):
        client.delete(key)


@pytest.mark.order_path(every_redis=True)
def test_an_order_event_waits_out_a_full_output_redis_and_is_published_once(
    small_redis: redis.Redis,
    redis_url: str,
    redis_client: redis.Redis,
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    output_url = small_redis.connection_pool.connection_kwargs
    url = f"redis://127.0.0.1:{output_url['port']}/0"
    worker = worker_factory(
        url, queues=ORDERS_QUEUE, name="orders-full", env={"CELERY_BROKER_URL": redis_url}
    )
    assert fill(small_redis) > 0
    send_order(redis_url, url, fill_event())
    wait_until(
        lambda: "not published yet" in worker.log(), 20, message="the worker waits for memory"
    )
    # Refused, not failed: nothing published, the task still unacknowledged in the broker.
    assert small_redis.xlen(KEYS.orders_events) == 0
    assert redis_client.hlen(UNACKED) == 1

    free(small_redis)
    wait_published_once(small_redis, redis_client)
    assert "published after" in worker.log()
    assert worker.proc is not None
    assert worker.proc.poll() is None


@pytest.mark.order_path(every_redis=True)
def test_a_worker_survives_its_broker_full_when_recording_a_task_and_runs_it_once(
    small_redis: redis.Redis,
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    kwargs = small_redis.connection_pool.connection_kwargs
    url = f"redis://127.0.0.1:{kwargs['port']}/0"
    # The task is sent while there is room, and parked where no worker looks.
    send_order(url, url, fill_event())
    assert small_redis.llen(ORDERS_QUEUE) == 1
    small_redis.rename(ORDERS_QUEUE, "parked")
    worker = worker_factory(url, queues=ORDERS_QUEUE, name="orders-broker-full")
    assert fill(small_redis) > 0
    # RENAME adds no memory, so a full Redis accepts it, and it wakes the idle worker's
    # BRPOP: the worker takes the task, then kombu's ZADD to `unacked_index` is refused.
    small_redis.rename("parked", ORDERS_QUEUE)
    wait_until(lambda: "broker out of memory" in worker.log(), 20, message="the record is refused")
    assert small_redis.llen(ORDERS_QUEUE) == 0  # taken off the queue: the worker holds it
    assert worker.proc is not None
    assert worker.proc.poll() is None, worker.log()

    free(small_redis)
    wait_published_once(small_redis, small_redis)
    assert "Unrecoverable error" not in worker.log()
    assert worker.proc.poll() is None
