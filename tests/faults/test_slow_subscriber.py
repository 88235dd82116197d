"""A pub/sub subscriber that never reads: Redis drops it at its output-buffer limit and the
pipeline goes on (other listeners keep receiving, the producer's buffer stays small)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import redis

from alpaca_broker.keys import PRICES_QUEUE, Keys
from alpaca_broker.redis_server import RedisServer
from simulator.api import Simulator
from tests.e2e.test_price_pipeline import ChannelListener
from tests.harness.pipeline import Pipeline
from tests.harness.wait import wait_until

pytestmark = pytest.mark.faults

KEYS = Keys()
MARKET_RATE = 2000  # messages per second
PUBSUB_LIMIT = "pubsub 256kb 128kb 2"
SLOW_NAME = "never-reads"


def _command(*parts: str) -> bytes:
    """One command in RESP."""
    out = f"*{len(parts)}\r\n".encode()
    for part in parts:
        data = part.encode()
        out += b"$%d\r\n%s\r\n" % (len(data), data)
    return out


@pytest.fixture
def slow_subscriber(own_redis: RedisServer) -> Iterator[socket.socket]:
    """A raw connection that PSUBSCRIBEs to every price channel and then never reads (a
    small receive buffer, so Redis's output buffer for it fills soon after the kernel's)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", own_redis.port))
    sock.sendall(
        _command("CLIENT", "SETNAME", SLOW_NAME) + _command("PSUBSCRIBE", KEYS.prices_pattern)
    )
    yield sock
    sock.close()


def _connected(client: redis.Redis, name: str) -> bool:
    return any(c.get("name") == name for c in client.client_list())


def test_slow_pubsub_subscriber_is_dropped_by_redis_and_the_pipeline_does_not_stall(
    sim: Simulator,
    own_client: redis.Redis,
    own_pipeline: Pipeline,
    slow_subscriber: socket.socket,
) -> None:
    client = own_client
    client.config_set("client-output-buffer-limit", PUBSUB_LIMIT)
    wait_until(lambda: _connected(client, SLOW_NAME), 5, message="the slow subscriber is in")
    healthy = ChannelListener(client)
    own_pipeline.worker(queues=PRICES_QUEUE)
    sim.set_market_rate(MARKET_RATE)
    sim.set_market(True)
    producer = own_pipeline.producer(
        streams="prices", ALPACA_SYMBOLS="*", ALPACA_DATA_CHANNELS="trades,quotes"
    )
    producer.wait_connected("prices")
    buffered: list[int] = []

    def watch() -> None:
        healthy.drain()
        buffered.append(producer.health()["streams"]["prices"].get("buffered", 0))

    def slow_one_dropped() -> bool:
        watch()
        return not _connected(client, SLOW_NAME)

    wait_until(slow_one_dropped, 30, interval=0.1, message="Redis drops the slow subscriber")
    assert int(client.info("stats")["client_output_buffer_limit_disconnections"]) >= 1
    received_at_drop = len(healthy.drain())
    assert received_at_drop > 0

    def flowing() -> bool:
        watch()
        return len(healthy.events) >= received_at_drop + 2 * MARKET_RATE

    wait_until(flowing, 20, interval=0.1, message="the healthy listener keeps receiving")
    health = producer.health()["streams"]["prices"]
    assert health["dropped"] == 0
    assert max(buffered) < MARKET_RATE  # never more than a second of market held
    # The worker keeps up, by the lag it records with every batch (a queue's depth alone says
    # little: a worker may hold what it took), and no backlog waits in the queue either.
    lag = client.hgetall(KEYS.prices_published)
    assert int(lag["oldest_age_ns"]) < 2 * 10**9, lag
    assert client.llen(PRICES_QUEUE) < 100
    healthy.pubsub.close()
