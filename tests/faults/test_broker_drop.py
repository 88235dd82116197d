"""The broker connection lost in the instant after a worker took an order task.

kombu's Redis transport pops the task (BRPOP), then records it as unacknowledged (ZADD +
HSET). A primary that dies between the two has replicated the pop, so the replica Sentinel
promotes has neither the task in its queue nor its record: the worker holds the only copy.
The proxy reproduces that instant: it passes the BRPOP reply on and cuts the connection
before the record arrives.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from alpaca_broker.keys import ORDERS_QUEUE
from tests.harness.faults import fill_event, send_order, wait_published_once
from tests.harness.proxy import TcpProxy
from tests.harness.wait import wait_until
from tests.harness.workers import WorkerProcess

pytestmark = pytest.mark.faults

#: The start of a BRPOP reply that took a task from the ``orders`` queue.
ORDERS_POPPED = b"*2\r\n$6\r\norders\r\n"


@pytest.mark.order_path(every_redis=True)
def test_an_order_task_taken_just_before_the_broker_connection_drops_still_runs_once(
    redis_url: str,
    redis_client: redis.Redis,
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    kwargs = redis_client.connection_pool.connection_kwargs
    with TcpProxy((kwargs["host"], kwargs["port"])) as proxy:
        worker = worker_factory(proxy.url(), queues=ORDERS_QUEUE, name="orders-dropped")
        proxy.cut_after(ORDERS_POPPED)
        send_order(redis_url, redis_url, fill_event())  # straight to Redis, past the proxy
        assert proxy.tripped.wait(20), "the worker never took the task"
        assert redis_client.llen(ORDERS_QUEUE) == 0  # popped: the worker holds the only copy
        wait_until(
            lambda: "cannot be recorded as unacked" in worker.log(),
            20,
            message="the record is refused",
        )
        proxy.restore()
        wait_published_once(redis_client, redis_client)
        assert worker.proc is not None
        assert worker.proc.poll() is None, worker.log()
