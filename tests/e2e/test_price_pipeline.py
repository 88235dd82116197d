"""Prices end to end: simulator -> real producer process -> real worker -> Redis."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import redis

from alpaca_broker.keys import Keys
from alpaca_broker.redis_server import RedisServer
from simulator import messages as m
from simulator.api import Simulator
from simulator.assetmsgs import bar_message
from simulator.bars import MinuteBar
from tests.harness.producer import ProducerProcess
from tests.harness.wait import wait_until

KEYS = Keys()
SYMBOL = "AAPL"
PRICE_ENV = {
    "ALPACA_SYMBOLS": SYMBOL,
    "ALPACA_DATA_CHANNELS": "trades,quotes,bars,updated_bars,daily_bars,statuses,lulds",
    # These tests count what the stream sends; bar backfill has its own (test_bar_backfill).
    "BAR_BACKFILL_MINUTES": "0",
}


def _bar(kind: str, ts: int, close: float) -> dict[str, Any]:
    return m.bar(
        kind, SYMBOL, ts, open_=190, high=191, low=189.5, close=close, volume=1200,
        trade_count=40, vwap=190.2,
    )  # fmt: skip


def _every_type(ts: int) -> list[dict[str, Any]]:
    return [
        m.trade(SYMBOL, ts, trade_id=1, price=190.5, size=3),
        m.quote(SYMBOL, ts + 1, bid_price=190.4, bid_size=2, ask_price=190.6, ask_size=5),
        _bar("b", ts + 2, 190.5),
        _bar("u", ts + 3, 190.6),
        _bar("d", ts + 4, 190.6),
        m.status(
            SYMBOL, ts + 5, status_code="H", status_message="Trading Halt",
            reason_code="T12", reason_message="News pending",
        ),
        m.luld(SYMBOL, ts + 6, limit_up=200.0, limit_down=180.0, indicator="B"),
        m.correction(
            SYMBOL, ts + 7, exchange="V", original=(1, 190.5, 3, ["@"]),
            corrected=(1, 190.55, 3, ["@"]),
        ),
        m.cancel_error(SYMBOL, ts + 8, trade_id=1, exchange="V", price=190.55, size=3),
    ]  # fmt: skip


class ChannelListener:
    """Subscribes to every price channel before anything is sent."""

    def __init__(self, client: redis.Redis) -> None:
        self.pubsub = client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.psubscribe(KEYS.prices_pattern)
        wait_until(
            lambda: self.pubsub.get_message(timeout=0.05) is None and self.pubsub.subscribed, 5
        )
        self.events: list[dict[str, Any]] = []

    def drain(self) -> list[dict[str, Any]]:
        while (msg := self.pubsub.get_message(timeout=0.01)) is not None:
            self.events.append(json.loads(msg["data"]))
        return self.events


@pytest.fixture
def listener(redis_client: redis.Redis) -> ChannelListener:
    return ChannelListener(redis_client)


def _subscribed(sim: Simulator) -> bool:
    return any(SYMBOL in row.get("trades", []) for row in sim.subscriptions())


@pytest.fixture
def producer(sim, redis_url, worker_factory, producer_factory) -> ProducerProcess:
    """A price worker and a price producer, connected and subscribed to the simulator."""
    worker_factory(redis_url, queues="prices")
    running: ProducerProcess = producer_factory(redis_url, sim, streams="prices", **PRICE_ENV)
    running.wait_connected("prices")
    wait_until(lambda: _subscribed(sim), 10)
    return running


def test_every_message_type_arrives_once_on_its_channel_and_in_the_latest_hash(
    sim, producer, redis_client, listener
) -> None:
    ts = time.time_ns()
    sim.push_market(_every_type(ts))
    wait_until(lambda: len(listener.drain()) >= 9, 15)
    events = listener.drain()
    types = sorted(e["type"] for e in events)
    assert types == sorted(
        [
            "trade",
            "quote",
            "bar",
            "updated_bar",
            "daily_bar",
            "status",
            "luld",
            "correction",
            "cancel_error",
        ]
    )
    trade = next(e for e in events if e["type"] == "trade")
    assert trade["symbol"] == SYMBOL
    assert trade["ts_ns"] == ts
    assert trade["timestamp"].endswith("Z")
    assert len(trade["timestamp"].split(".")[1]) == len("123456789Z")
    assert (trade["price"], trade["size"], trade["trade_id"], trade["conditions"]) == (
        190.5,
        3,
        1,
        ["@"],
    )
    assert trade["received_at"].endswith("Z")
    latest = redis_client.hgetall(KEYS.latest(SYMBOL))
    assert set(latest) == {e["type"] for e in events}
    assert json.loads(latest["quote"])["ask_size"] == 5


def test_an_older_bar_after_a_newer_one_does_not_regress_the_latest_hash(
    sim, producer, redis_client, listener
) -> None:
    ts = time.time_ns()
    newer = bar_message("b", SYMBOL, MinuteBar(ts, 1, 2, 1, 2, 10, 1, 1.5))
    older = bar_message("b", SYMBOL, MinuteBar(ts - 60_000_000_000, 9, 9, 9, 9, 9, 9, 9))
    sim.push_market([newer])
    wait_until(lambda: len(listener.drain()) == 1, 15)
    sim.push_market([older])
    wait_until(lambda: len(listener.drain()) == 2, 15)  # published, as every event is
    held = json.loads(redis_client.hget(KEYS.latest(SYMBOL), "bar"))
    assert held["ts_ns"] == ts
    assert held["close"] == 2


def test_malformed_frames_are_counted_and_skipped_while_valid_ones_flow(
    sim, producer, listener
) -> None:
    for kind in ("not_msgpack", "missing_T", "trade_missing_fields"):
        sim.push_malformed(kind)
    sim.push_market([m.trade(SYMBOL, time.time_ns(), trade_id=7, price=1.0, size=1)])
    wait_until(lambda: any(e.get("trade_id") == 7 for e in listener.drain()), 15)
    wait_until(lambda: producer.health()["streams"]["prices"]["malformed"] >= 3, 5)
    assert "skipped malformed prices frame: undecodable frame" in producer.log()


def test_dropped_connection_is_reconnected_and_resubscribed(sim, producer, listener) -> None:
    sim.drop("data")
    wait_until(lambda: producer.health()["streams"]["prices"]["reconnects"] >= 1, 15)
    producer.wait_connected("prices")
    wait_until(lambda: _subscribed(sim), 10)
    sim.push_market([m.trade(SYMBOL, time.time_ns(), trade_id=8, price=1.0, size=1)])
    wait_until(lambda: any(e.get("trade_id") == 8 for e in listener.drain()), 15)


def test_silent_socket_is_detected_and_reconnected(sim, redis_url, producer_factory) -> None:
    sim.set_market_rate(50)
    sim.set_market(True)
    producer = producer_factory(
        redis_url, sim, streams="prices", ALPACA_DATA_TIMEOUT="1", **PRICE_ENV
    )
    producer.wait_connected("prices")
    wait_until(lambda: producer.health()["streams"]["prices"]["received"] > 0, 10)
    sim.silence("data")
    wait_until(lambda: "no market data for 1s; reconnecting" in producer.log(), 10)
    wait_until(lambda: producer.health()["streams"]["prices"]["reconnects"] >= 1, 15)


@pytest.mark.parametrize(
    ("fault", "text"), [("auth", "auth failed"), ("feed", "insufficient subscription")]
)
def test_rejected_credentials_or_subscription_end_the_producer_with_exit_3(
    sim, redis_url, producer_factory, fault, text
) -> None:
    if fault == "auth":
        sim.fail_auth("data", None)
    else:
        sim.deny_feed("iex")
    producer = producer_factory(redis_url, sim, streams="prices", **PRICE_ENV)
    assert producer.wait_exit(30) == 3
    stopped = [line for line in producer.log().splitlines() if "prices stopped:" in line]
    assert len(stopped) == 1
    assert text in stopped[0]


def test_a_recorded_session_replays_to_the_same_events(
    tmp_path, redis_url, listener, worker_factory, producer_factory
) -> None:
    recording = tmp_path / "session.jsonl"
    worker_factory(redis_url, queues="prices")
    with Simulator() as live:
        producer = producer_factory(
            redis_url, live, streams="prices", ALPACA_RECORD_FILE=str(recording), **PRICE_ENV
        )
        producer.wait_connected("prices")
        wait_until(lambda: _subscribed(live), 10)
        live.push_market(_every_type(time.time_ns()))
        wait_until(lambda: len(listener.drain()) >= 9, 15)
        assert producer.stop() == 0
    first = [(e["type"], e["ts_ns"]) for e in listener.drain()]
    listener.events.clear()
    with Simulator(replay=recording, replay_speed=None) as replay:
        producer_factory(redis_url, replay, streams="prices", **PRICE_ENV).wait_connected("prices")
        wait_until(lambda: len(listener.drain()) >= 9, 15)
    assert sorted((e["type"], e["ts_ns"]) for e in listener.drain()) == sorted(first)


@pytest.mark.slow
def test_redis_down_for_ten_seconds_the_producer_keeps_reading_drops_oldest_and_resumes(
    sim, tmp_path, worker_factory, producer_factory
) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        worker_factory(server.url, queues="prices")
        sim.set_market_rate(2000)
        sim.set_market(True)
        producer = producer_factory(
            server.url, sim, streams="prices", PRICE_BUFFER_SIZE="1000", ALPACA_SYMBOLS="*",
            ALPACA_DATA_CHANNELS="trades,quotes",
        )  # fmt: skip
        producer.wait_connected("prices")
        before = ChannelListener(redis.Redis.from_url(server.url))
        wait_until(lambda: len(before.drain()) > 100, 15, message="prices flow")
        server.stop(kill=True)
        sent = sim.stats()["market_messages"]
        # Down for ten seconds of market at 2,000 messages/s, measured by what was sent.
        wait_until(lambda: sim.stats()["market_messages"] - sent >= 20_000, 30)
        server.start()
        after = ChannelListener(redis.Redis.from_url(server.url))
        wait_until(lambda: len(after.drain()) > 100, 30, message=producer.log())
        health = producer.health()
        prices, thread = health["streams"]["prices"], health["threads"]["prices"]
        assert prices["dropped"] > 0  # the buffer (1,000) overflowed while Redis was away
        assert prices["reconnects"] == 0  # the read loop never stopped
        assert thread["restarts"] == 0
        assert prices["received"] > 20_000
        assert producer.proc is not None
        assert producer.proc.poll() is None
    finally:
        server.stop(kill=True)
