"""The crypto, option and news streams, through alpaca-py's real stream clients."""

from __future__ import annotations

from typing import Any

import msgpack
from alpaca.data.enums import OptionsFeed
from alpaca.data.live.crypto import CryptoDataStream
from alpaca.data.live.news import NewsDataStream
from alpaca.data.live.option import OptionDataStream
from websockets.sync.client import connect

from simulator import Simulator
from tests.harness.wait import wait_until
from tests.simulator.conftest import MARKET_CHANNELS, Running, collector, subscribe


def fast(rate: float = 2000) -> Simulator:
    """A synthetic market with a two-minutes-a-second clock."""
    return Simulator(synthetic=True, rate=rate, clock_speed=120, seed=7)


def _types(received: list[Any]) -> set[str]:
    return {m["T"] for m in received}


def test_crypto_stream_sends_every_message_type_with_crypto_shapes() -> None:
    received, handler = collector()
    with fast() as sim:
        stream = CryptoDataStream("k", "s", raw_data=True, url_override=sim.crypto_url)
        subscribe(stream, handler, (*MARKET_CHANNELS, "orderbooks"), "BTC/USD", "ETH/USD")
        with Running(stream, sim, "crypto"):
            wait_until(
                lambda: {"t", "q", "b", "u", "d", "o"} <= _types(received),
                timeout=30,
                message="every crypto message type",
            )
    trade = next(m for m in received if m["T"] == "t")
    assert trade["tks"] in ("B", "S")
    assert isinstance(trade["s"], float)
    quote = next(m for m in received if m["T"] == "q")
    assert {"bx", "ax", "c"}.isdisjoint(quote)
    books = [m for m in received if m["T"] == "o"]
    first = {m["S"]: m for m in reversed(books)}  # the first book message of each symbol
    assert all(m.get("r") is True for m in first.values())
    assert set(first) == {"BTC/USD", "ETH/USD"}
    updates = [m for m in books if not m.get("r")]
    assert updates
    assert all(set(level) == {"p", "s"} for m in updates for level in m["b"] + m["a"])
    assert isinstance(next(m for m in received if m["T"] == "b")["v"], float)


def test_crypto_star_subscription_gets_the_default_pairs() -> None:
    received, handler = collector()
    with fast() as sim:
        stream = CryptoDataStream("k", "s", raw_data=True, url_override=sim.crypto_url)
        stream.subscribe_quotes(handler, "*")
        with Running(stream, sim, "crypto"):
            wait_until(lambda: len({m["S"] for m in received}) >= 6, message="six pairs")
    assert all("/" in m["S"] for m in received)


def test_option_stream_sends_trades_and_quotes_with_one_condition_string() -> None:
    received, handler = collector()
    with fast() as sim:
        stream = OptionDataStream(
            "k", "s", raw_data=True, feed=OptionsFeed.OPRA, url_override=sim.option_url_for("opra")
        )
        stream.subscribe_trades(handler, "AAPL261218C00150000")
        stream.subscribe_quotes(handler, "AAPL261218C00150000")
        with Running(stream, sim, "options"):
            wait_until(lambda: {"t", "q"} <= _types(received), message="option trade and quote")
    assert {m["S"] for m in received} == {"AAPL261218C00150000"}
    assert all(isinstance(m["c"], str) for m in received)


def _raw_subscribe(url: str, request: dict[str, Any]) -> list[Any]:
    headers = {"Content-Type": "application/msgpack"}
    with connect(url, additional_headers=headers) as ws:
        ws.recv(5)
        ws.send(msgpack.packb({"action": "auth", "key": "k", "secret": "s"}))
        ws.recv(5)
        ws.send(msgpack.packb({"action": "subscribe", **request}))
        reply: list[Any] = msgpack.unpackb(ws.recv(5))
        return reply


def test_star_on_option_quotes_is_refused_with_413_but_allowed_on_trades() -> None:
    with Simulator() as sim:
        assert _raw_subscribe(sim.option_url, {"quotes": ["*"]}) == [
            {"T": "error", "code": 413, "msg": "star subscription is not allowed for option quotes"}
        ]
        reply = _raw_subscribe(sim.option_url, {"trades": ["*"]})
        assert reply == [{"T": "subscription", "trades": ["*"], "quotes": []}]


def test_option_stream_refuses_a_json_client_with_412() -> None:
    with Simulator() as sim, connect(sim.option_url) as ws:
        text = "option messages are only available in MsgPack format"
        assert ws.recv(5) == f'[{{"T":"error","code":412,"msg":"{text}"}}]'


def test_channels_of_another_stream_are_refused_with_410() -> None:
    with Simulator() as sim:
        assert _raw_subscribe(sim.news_url, {"trades": ["AAPL"]})[0]["code"] == 410
        assert _raw_subscribe(sim.option_url, {"bars": ["AAPL261218C00150000"]})[0]["code"] == 410
        assert _raw_subscribe(sim.data_url, {"orderbooks": ["AAPL"]})[0]["code"] == 410


def test_news_stream_sends_articles_and_later_updates_of_the_same_id() -> None:
    received, handler = collector()
    with fast(3000) as sim:
        stream = NewsDataStream("k", "s", raw_data=True, url_override=sim.news_url)
        stream.subscribe_news(handler, "*")
        with Running(stream, sim, "news"):

            def an_update() -> bool:
                first: dict[int, Any] = {}
                for m in received:
                    earlier = first.get(m["id"])
                    if (
                        earlier
                        and m["updated_at"].to_unix_nano() > earlier["updated_at"].to_unix_nano()
                    ):
                        return True
                    first.setdefault(m["id"], m)
                return False

            wait_until(an_update, timeout=30, message="an article and its update")
    article = received[0]
    assert article["T"] == "n"
    assert article["source"] == "benzinga"
    assert article["symbols"]
    assert isinstance(article["created_at"], msgpack.Timestamp)
    assert {"headline", "summary", "author", "content", "url"} <= set(article)


def test_news_in_typed_mode_parses_the_timestamps() -> None:
    received, handler = collector()
    with fast(3000) as sim:
        stream = NewsDataStream("k", "s", url_override=sim.news_url)
        stream.subscribe_news(handler, "AAPL")
        with Running(stream, sim, "news"):
            wait_until(lambda: received, timeout=30, message="a typed article")
    assert received[0].created_at.tzinfo is not None
    assert "AAPL" in received[0].symbols
