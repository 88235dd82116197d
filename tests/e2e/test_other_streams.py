"""The crypto, option and news streams in the producer: each on its own connection, read
by the real alpaca-py clients from the simulator, counted and handed to Celery."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import redis

from alpaca_broker.keys import Keys
from simulator import assetmsgs as am
from simulator.api import Simulator
from simulator.bars import MinuteBar
from tests.e2e.test_price_pipeline import ChannelListener
from tests.harness.pipeline import Pipeline
from tests.harness.producer import TEST_KEY, TEST_SECRET, ProducerProcess
from tests.harness.wait import wait_until
from tests.harness.workers import REPO, process_env

KEYS = Keys()

OTHER = {
    "ALPACA_CRYPTO_SYMBOLS": "BTC/USD,ETH/USD",
    "ALPACA_CRYPTO_CHANNELS": "trades,quotes,bars,orderbooks",
    "ALPACA_OPTION_SYMBOLS": "AAPL261218C00150000",
    "ALPACA_NEWS_SYMBOLS": "*",
}


@pytest.mark.slow
def test_crypto_options_and_news_streams_connect_and_hand_off_beside_stocks(
    synthetic_sim: Simulator, redis_url: str, producer_factory: Callable[..., ProducerProcess]
) -> None:
    producer = producer_factory(
        redis_url, synthetic_sim, streams="prices,crypto,options,news", **OTHER
    )
    producer.wait_connected("prices", "crypto", "options", "news", timeout=30)

    def flowing() -> bool:
        streams = producer.health()["streams"]
        return all(streams[s]["enqueued"] > 0 for s in ("prices", "crypto", "options", "news"))

    wait_until(flowing, 30, message=f"every stream hands off\n{producer.log()}")
    assert all(s["malformed"] == 0 for s in producer.health()["streams"].values())


def _start(redis_url: str, streams: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = process_env(redis_url, ALPACA_API_KEY=TEST_KEY, ALPACA_SECRET_KEY=TEST_SECRET)
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-m", "alpaca_broker", "producer", "--streams", streams],
        env=environ,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("streams", "env", "variable"),
    [
        ("options", {"ALPACA_OPTION_SYMBOLS": "*"}, "ALPACA_OPTION_SYMBOLS"),
        ("options", {}, "ALPACA_OPTION_SYMBOLS"),
        ("crypto", {}, "ALPACA_CRYPTO_SYMBOLS"),
        (
            "crypto",
            {"ALPACA_CRYPTO_SYMBOLS": "BTC/USD", "ALPACA_CRYPTO_CHANNELS": "lulds"},
            "ALPACA_CRYPTO_CHANNELS",
        ),
        (
            "options",
            {"ALPACA_OPTION_SYMBOLS": "X", "ALPACA_OPTION_CHANNELS": "bars"},
            "ALPACA_OPTION_CHANNELS",
        ),
    ],
)
def test_an_unusable_stream_setting_stops_the_producer_with_one_line(
    redis_url: str, streams: str, env: dict[str, str], variable: str
) -> None:
    result = _start(redis_url, streams, **env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert variable in lines[0]


CRYPTO, OPTION = "BTC/USD", "AAPL261218C00150000"
SCRIPTED = {
    "ALPACA_CRYPTO_SYMBOLS": CRYPTO,
    "ALPACA_CRYPTO_CHANNELS": "trades,quotes,bars,updated_bars,daily_bars,orderbooks",
    "ALPACA_OPTION_SYMBOLS": OPTION,
    "ALPACA_NEWS_SYMBOLS": "*",
    "BAR_BACKFILL_MINUTES": "0",  # this test counts what the streams send
}


def _market_messages(ts: int) -> list[dict[str, Any]]:
    bar = MinuteBar(
        ts - ts % 60_000_000_000, 90_000.0, 90_100.0, 89_900.0, 90_050.0, 1.5, 12, 90_010.0
    )
    return [
        am.crypto_trade(CRYPTO, ts, trade_id=1, price=90_000.5, size=0.25, taker="B"),
        am.crypto_quote(CRYPTO, ts + 1, bid=90_000.0, bid_size=1.5, ask=90_001.0, ask_size=2.0),
        am.bar_message("b", CRYPTO, bar),
        am.bar_message("u", CRYPTO, bar),
        am.bar_message("d", CRYPTO, bar),
        am.orderbook(CRYPTO, ts + 2, [(90_000.0, 1.5)], [(90_001.0, 2.0)], reset=True),
        am.orderbook(CRYPTO, ts + 3, [(90_000.0, 0.0)], [], reset=False),
        am.option_trade(OPTION, ts, price=2.84, size=1, exchange="N", condition="S"),
        am.option_quote(OPTION, ts + 1, bid=2.8, bid_size=5, ask=2.9, ask_size=7, exchange="C"),
    ]


def _article(updated_ns: int, created_ns: int) -> dict[str, Any]:
    return am.news(
        24918784, headline="Corsair buys iDisplay", summary="s", author="Benzinga Newsdesk",
        created_ns=created_ns, updated_ns=updated_ns, content="<p>c</p>",
        url="https://example.invalid/n/1", symbols=["CRSR", "AAPL"],
    )  # fmt: skip


@pytest.mark.slow
def test_every_crypto_option_and_news_message_type_reaches_its_outputs_once(
    sim: Simulator, redis_client: redis.Redis, pipeline: Pipeline
) -> None:
    pipeline.worker(queues="prices,orders")
    listener = ChannelListener(redis_client)
    news_channel = redis_client.pubsub(ignore_subscribe_messages=True)
    news_channel.subscribe(KEYS.news_channel)
    producer = pipeline.producer(streams="crypto,options,news", **SCRIPTED)
    producer.wait_connected("crypto", "options", "news", timeout=30)
    wait_until(lambda: len(sim.subscriptions()) == 3, 10, message="three subscriptions")
    ts = time.time_ns()
    sim.push_market(_market_messages(ts))
    article = _article(ts, ts - 1_000_000_000)
    sim.push_market([article])
    sim.push_market([article])  # sent twice: published once
    sim.push_market([_article(ts + 5_000_000_000, ts - 1_000_000_000)])  # its update
    sim.push_market([_article(ts - 500_000_000, ts - 1_000_000_000)])  # older: nothing

    wait_until(lambda: len(listener.drain()) >= 9, 20, message=f"9 events\n{producer.log()}")
    events = listener.drain()
    kinds = Counter((e["symbol"], e["type"]) for e in events)
    assert kinds == Counter({
        (CRYPTO, "trade"): 1, (CRYPTO, "quote"): 1, (CRYPTO, "bar"): 1,
        (CRYPTO, "updated_bar"): 1, (CRYPTO, "daily_bar"): 1, (CRYPTO, "orderbook"): 2,
        (OPTION, "trade"): 1, (OPTION, "quote"): 1,
    })  # fmt: skip
    by_type = {(e["symbol"], e["type"]): e for e in events}
    trade = by_type[(CRYPTO, "trade")]
    assert (trade["taker_side"], trade["size"], trade["asset_class"]) == ("B", 0.25, "crypto")
    assert trade["source"] == "stream"
    book = by_type[(CRYPTO, "orderbook")]
    assert [e["reset"] for e in events if e["type"] == "orderbook"] == [True, False]
    assert book["bids"] in ([[90_000.0, 1.5]], [[90_000.0, 0.0]])
    option = by_type[(OPTION, "trade")]
    assert (option["conditions"], option["asset_class"]) == ("S", "us_option")
    latest = redis_client.hgetall(KEYS.latest(CRYPTO))
    assert "orderbook" not in latest  # on the channel only
    assert {"trade", "quote", "bar", "updated_bar", "daily_bar"} <= latest.keys()
    assert set(redis_client.hgetall(KEYS.latest(OPTION))) == {"trade", "quote"}

    wait_until(lambda: redis_client.xlen(KEYS.news_events) >= 2, 20, message="two articles")
    articles = [json.loads(f["event"]) for _, f in redis_client.xrange(KEYS.news_events)]
    assert [(a["type"], a["id"], a["symbol"]) for a in articles] == [("news", 24918784, None)] * 2
    assert articles[1]["updated_at"] > articles[0]["updated_at"]
    assert articles[0]["symbols"] == ["CRSR", "AAPL"]
    assert articles[0]["provider"] == "benzinga"
    published: list[Any] = []

    def two_published() -> bool:
        while (message := news_channel.get_message(timeout=0.05)) is not None:
            published.append(message)
        return len(published) >= 2

    wait_until(two_published, 10, message="both versions on P:news")
    assert redis_client.xlen(KEYS.news_events) == 2
    assert len(published) == 2


@pytest.mark.slow
def test_a_406_on_the_crypto_connection_delays_only_crypto_while_stocks_flow(
    sim: Simulator, pipeline: Pipeline
) -> None:
    sim.hold_slot(TEST_KEY, feed="crypto/us", seconds=60)
    sim.set_market(True)
    producer = pipeline.producer(
        streams="prices,crypto", ALPACA_CRYPTO_SYMBOLS=CRYPTO, ALPACA_CONNECTION_LIMIT_WAIT="60"
    )
    producer.wait_connected("prices")
    wait_until(lambda: producer.health()["streams"]["prices"]["received"] > 0, 15)
    wait_until(lambda: sim.stats()["errors_sent"].get(406, 0) >= 1, 15, message="crypto 406")
    assert producer.health()["streams"]["crypto"]["state"] != "connected"
    before = producer.health()["streams"]["prices"]["received"]
    wait_until(lambda: producer.health()["streams"]["prices"]["received"] > before, 15)
    assert sim.stats()["errors_sent"].get(406, 0) == 1  # one attempt per window, no storm
