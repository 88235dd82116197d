"""Redis, which is both the broker and the output, away for thirty seconds and back with its
AOF: prices resume, every order event (including those during the outage) arrives once."""

from __future__ import annotations

import json
import time

import pytest
import redis

from alpaca_broker.keys import ORDERS_QUEUE, PRICES_QUEUE, Keys
from alpaca_broker.redis_server import RedisServer
from simulator.api import Simulator
from tests.e2e.test_price_pipeline import ChannelListener
from tests.harness.faults import (
    SHORT_VISIBILITY,
    assert_each_emitted_event_published_once,
    assert_order_hashes_match_the_book,
    wait_orders_settled,
    wait_reconciled_once,
)
from tests.harness.pipeline import Pipeline
from tests.harness.wait import wait_until

pytestmark = pytest.mark.faults

KEYS = Keys()
MARKET_RATE = 200  # messages per second
OUTAGE_SECONDS = 30
#: A task held when the connection broke is delivered again after this many seconds
#: (production keeps the 300 s default: the same recovery, later).


@pytest.mark.order_path
def test_redis_down_thirty_seconds_prices_resume_and_every_order_event_arrives_once(
    sim: Simulator, own_redis: RedisServer, own_client: redis.Redis, own_pipeline: Pipeline
) -> None:
    client = own_client
    own_pipeline.worker(queues=PRICES_QUEUE, name="prices", env=SHORT_VISIBILITY)
    own_pipeline.worker(queues=ORDERS_QUEUE, name="orders", env=SHORT_VISIBILITY)
    sim.set_market_rate(MARKET_RATE)
    sim.set_market(True)
    producer = own_pipeline.producer(
        ALPACA_SYMBOLS="AAPL,MSFT", ALPACA_DATA_CHANNELS="trades,quotes",
        PRICE_BUFFER_SIZE="1000", RECONCILE_INTERVAL="3600",
    )  # fmt: skip
    producer.wait_connected("prices", "orders")
    wait_reconciled_once(sim)
    sim.set_order_flow(5)
    before = ChannelListener(client)
    wait_until(lambda: len(before.drain()) > 100, 20, message="prices flow")
    wait_until(lambda: client.xlen(KEYS.orders_events) >= 5, 20, message="orders flow")
    before.pubsub.close()

    own_redis.stop(kill=True)
    sent = sim.stats()["market_messages"]
    orders_before = len(sim.orders.events())
    # Thirty seconds of market, measured by what the simulator sent meanwhile.
    wait_until(
        lambda: sim.stats()["market_messages"] - sent >= OUTAGE_SECONDS * MARKET_RATE,
        OUTAGE_SECONDS + 20,
        interval=0.2,
    )
    during_outage = len(sim.orders.events()) - orders_before
    assert during_outage >= 10  # order events happened while Redis was away
    own_redis.start()
    restarted_ns = time.time_ns()

    after = ChannelListener(client)
    wait_until(
        lambda: any(e["ts_ns"] > restarted_ns for e in after.drain()),
        30,
        message=f"prices resume\n{producer.log()[-3000:]}",
    )
    wait_until(
        lambda: (
            (raw := client.hget(KEYS.latest("AAPL"), "quote"))
            and json.loads(raw)["ts_ns"] > restarted_ns
        ),
        20,
        message="the latest hash moves on",
    )
    sim.set_order_flow(0)
    wait_orders_settled(sim)
    assert_each_emitted_event_published_once(client, sim, timeout=40)
    assert_order_hashes_match_the_book(client, sim)

    health = producer.health()
    assert health["streams"]["prices"]["dropped"] > 0  # the 1,000-event buffer overflowed
    assert health["streams"]["orders"]["dropped"] == 0  # the order buffer never drops
    assert {unit: t["restarts"] for unit, t in health["threads"].items() if t["restarts"]} == {}
    assert producer.proc is not None
    assert producer.proc.poll() is None
    after.pubsub.close()
