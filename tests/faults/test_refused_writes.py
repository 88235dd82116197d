"""A broker or output write refused for a moment delays an order event; it never drops one.

Issue 25, item 1: ``CONFIG SET min-replicas-to-write 1`` on a primary with no replica makes
every write answer ``NOREPLICAS`` (on Redis 6.2, inside the order script, as a script error
naming it) for as long as it is set. The producer's order hand-off must hold its batch and
send it once writes are accepted; a worker must hold its task and publish it then.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable, Iterator

import pytest
import redis

from alpaca_broker.keys import ORDER_EVENT_TASK, ORDERS_QUEUE, Keys
from alpaca_broker.redis_server import RedisServer
from alpaca_broker.settings import Settings
from celery_app.config import create_app
from producers.buffer import EventBuffer, Message
from producers.handoff import BatchPolicy, Handoff, each_sender
from producers.health import StreamStatus
from tests.harness.faults import UNACKED, fill_event, send_order, wait_published_once
from tests.harness.wait import wait_until
from tests.harness.workers import WorkerProcess

pytestmark = pytest.mark.faults

KEYS = Keys()
REFUSED_FOR = 1.5  # seconds, as the issue saw it


def refuse_writes(client: redis.Redis, seconds: float) -> threading.Timer:
    """Every write answers NOREPLICAS until ``seconds`` from now."""
    client.config_set("min-replicas-to-write", 1)
    timer = threading.Timer(seconds, client.config_set, ("min-replicas-to-write", 0))
    timer.start()
    return timer


@pytest.fixture
def handoff(redis_url: str) -> Iterator[tuple[EventBuffer[Message], StreamStatus]]:
    """The producer's order hand-off, as ``producers.streams`` builds it, on a thread."""
    settings = Settings(REDIS_URL=redis_url, _env_file=None)
    status = StreamStatus("orders")
    buffer: EventBuffer[Message] = EventBuffer(status, maxlen=None)
    send = each_sender(create_app(settings), ORDER_EVENT_TASK, ())
    unit = Handoff("orders.handoff", buffer, status, send, BatchPolicy(1, 0, 8), droppable=False)
    thread = threading.Thread(target=unit.run, daemon=True)
    thread.start()
    yield buffer, status
    unit.stop()
    thread.join(5)


def queued_execution_ids(client: redis.Redis) -> set[str]:
    """The execution ids of the order tasks waiting in the ``orders`` queue."""
    ids = set()
    for raw in client.lrange(ORDERS_QUEUE, 0, -1):
        body = json.loads(raw)["body"]  # Celery's protocol 2: [args, kwargs, embed]
        args = json.loads(base64.b64decode(body) if isinstance(body, str) else body)
        data = args[0][0]  # publish_event(data, received_at_ns, source)
        ids.add(data["execution_id"])
    return ids


@pytest.mark.order_path(every_redis=True)
def test_order_events_handed_off_while_writes_are_refused_are_all_queued_none_dropped(
    redis_client: redis.Redis, handoff: tuple[EventBuffer[Message], StreamStatus]
) -> None:
    buffer, status = handoff
    first = fill_event()  # one sent before: the connection has declared its queue
    buffer.put(Message(1, first))
    wait_until(lambda: redis_client.llen(ORDERS_QUEUE) == 1, 10, message="the first is queued")
    expected = {first["execution_id"]}
    timer = refuse_writes(redis_client, REFUSED_FOR)
    for _ in range(12):  # up to 8 go out in one round trip (a batch), the rest after
        data = fill_event()
        expected.add(data["execution_id"])
        buffer.put(Message(1, data))
    timer.join()
    wait_until(
        lambda: queued_execution_ids(redis_client) >= expected or status.dropped > 0,
        30,
        message="every order event queued once writes are accepted",
    )
    assert status.dropped == 0
    assert queued_execution_ids(redis_client) == expected


@pytest.mark.order_path(every_redis=True)
def test_an_order_task_whose_publication_is_refused_is_published_once_writes_resume(
    redis_url: str,
    redis_client: redis.Redis,
    own_redis: RedisServer,
    own_client: redis.Redis,
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    worker = worker_factory(
        own_redis.url, queues=ORDERS_QUEUE, name="orders-refused",
        env={"CELERY_BROKER_URL": redis_url},
    )  # fmt: skip
    own_client.config_set("min-replicas-to-write", 1)  # the output refuses every write
    send_order(redis_url, own_redis.url, fill_event())
    wait_until(lambda: "not published yet" in worker.log(), 20, message="the worker holds the task")
    assert redis_client.hlen(UNACKED) == 1  # unacknowledged while refused
    own_client.config_set("min-replicas-to-write", 0)
    wait_published_once(own_client, redis_client)
    assert own_client.xlen(KEYS.orders_dead_letter) == 0
    assert worker.proc is not None
    assert worker.proc.poll() is None, worker.log()
