"""The simulator's side of a universe that changes at run time: unsubscribe, the per-connection
symbol limit (405), symbols the plan does not cover (409), channels a stream lacks (410), a
``subscription`` reply to every change, the sizes of the messages received, and every stock
feed Alpaca offers (``boats`` and ``overnight`` under ``v1beta1``), streams and bars."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import msgpack
import pytest
import requests
from alpaca.data.enums import DataFeed
from alpaca.data.historical.stock import StockHistoricalDataClient
from alpaca.data.requests import StockBarsRequest
from alpaca.data.timeframe import TimeFrame
from websockets.sync.client import ClientConnection, connect

from simulator import Simulator
from simulator.cli import build_parser, config_from_args

MSGPACK = {"Content-Type": "application/msgpack"}


def ask(ws: ClientConnection, message: dict[str, Any]) -> dict[str, Any]:
    """Send one client message; the one control message it is answered with."""
    ws.send(msgpack.packb(message))
    (reply,) = msgpack.unpackb(ws.recv(timeout=5))
    assert isinstance(reply, dict)
    return reply


@contextlib.contextmanager
def authenticated(url: str) -> Iterator[ClientConnection]:
    """A data-stream client connected and authenticated, closed after use."""
    with connect(url, additional_headers=MSGPACK) as ws:
        assert msgpack.unpackb(ws.recv(timeout=5))[0]["msg"] == "connected"
        assert ask(ws, {"action": "auth", "key": "k", "secret": "s"})["msg"] == "authenticated"
        yield ws


def test_every_change_is_confirmed_with_the_whole_set_and_unsubscribe_takes_away() -> None:
    with Simulator() as sim, authenticated(sim.data_url) as ws:
        reply = ask(ws, {"action": "subscribe", "trades": ["SPY", "NVDA"], "quotes": ["SPY"]})
        assert (reply["T"], reply["trades"], reply["quotes"]) == (
            "subscription",
            ["SPY", "NVDA"],
            ["SPY"],
        )
        assert reply["corrections"] == reply["cancelErrors"] == ["SPY", "NVDA"]
        reply = ask(ws, {"action": "unsubscribe", "trades": ["NVDA"], "quotes": ["SPY"]})
        assert (reply["trades"], reply["quotes"], reply["corrections"]) == (["SPY"], [], ["SPY"])
        stats = sim.stats()
        assert stats["subscription_messages"] == {"subscribe": 1, "unsubscribe": 1}
        assert stats["largest_subscription_message"] == 3


def test_a_405_409_or_410_refuses_the_whole_message_and_leaves_the_set_as_it_was() -> None:
    with (
        Simulator(symbol_limit=2, denied_symbols=frozenset({"OTCX"})) as sim,
        authenticated(sim.data_url) as ws,
    ):
        assert ask(ws, {"action": "subscribe", "trades": ["SPY"], "bars": ["A", "B", "C"]})[
            "bars"
        ] == ["A", "B", "C"]  # bars are not limited
        refused = ask(ws, {"action": "subscribe", "trades": ["NVDA"], "quotes": ["AMD"]})
        assert refused == {"T": "error", "code": 405, "msg": "symbol limit exceeded"}
        refused = ask(ws, {"action": "subscribe", "trades": ["OTCX"]})
        assert refused == {"T": "error", "code": 409, "msg": "insufficient subscription"}
        refused = ask(ws, {"action": "subscribe", "orderbooks": ["SPY"]})
        assert refused["code"] == 410
        assert refused["msg"] == "invalid subscribe action for this feed"
        assert sim.subscriptions() == [{"trades": ["SPY"], "bars": ["A", "B", "C"]}]
        assert ask(ws, {"action": "subscribe", "quotes": ["SPY", "NVDA"]})["quotes"] == [
            "SPY",
            "NVDA",
        ]  # two symbols on trades and quotes together: at the limit, not past it
        assert sim.stats()["errors_sent"] == {405: 1, 409: 1, 410: 1}


def test_a_universe_of_thousands_changed_a_thousand_at_a_time() -> None:
    symbols = [f"S{i:05d}" for i in range(20_000)]
    with Simulator() as sim, authenticated(sim.data_url) as ws:
        for at in range(0, len(symbols), 1000):
            reply = ask(ws, {"action": "subscribe", "trades": symbols[at : at + 1000]})
        assert len(reply["trades"]) == 20_000
        reply = ask(ws, {"action": "unsubscribe", "trades": symbols[:1000]})
        assert reply["trades"][0] == "S01000"
        assert sim.stats()["largest_subscription_message"] == 1000


@pytest.mark.parametrize(
    ("feed", "path"),
    [
        ("boats", "/v1beta1/boats"),
        ("overnight", "/v1beta1/overnight"),
        ("delayed_sip", "/v2/delayed_sip"),
    ],
)
def test_every_stock_feed_streams_at_alpacas_path(feed: str, path: str) -> None:
    with Simulator() as sim:
        assert sim.data_url_for(feed) == f"ws://{sim.host}:{sim.port}{path}"
        with authenticated(sim.data_url_for(feed)) as ws:
            assert ask(ws, {"action": "subscribe", "trades": ["SPY"]})["trades"] == ["SPY"]
            assert sim.subscriptions(feed) == [{"trades": ["SPY"]}]


@pytest.mark.parametrize("feed", ["iex", "sip", "delayed_sip", "boats", "overnight"])
def test_historical_bars_answer_the_feed_asked_for(feed: str) -> None:
    with Simulator() as sim:
        client = StockHistoricalDataClient("k", "s", raw_data=True, url_override=sim.rest_url)
        end = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=1)
        request = StockBarsRequest(
            symbol_or_symbols=["SPY"],
            timeframe=TimeFrame.Minute,
            start=end - timedelta(minutes=2),
            end=end,
            feed=DataFeed(feed),
        )
        bars = client.get_stock_bars(request)
        assert len(bars["SPY"]) == 3
        assert [r.params.get("feed") for r in sim.bars_requests()] == [feed]


def test_an_unknown_bars_feed_is_a_400() -> None:
    with Simulator() as sim:
        answer = requests.get(
            f"{sim.rest_url}/v2/stocks/bars",
            params={"symbols": "SPY", "timeframe": "1Min", "feed": "nasdaq"},
            headers={"APCA-API-KEY-ID": "k", "APCA-API-SECRET-KEY": "s"},
            timeout=10,
        )
        assert answer.status_code == 400
        assert "invalid feed" in answer.json()["message"]


def test_symbol_limit_and_denied_symbols_options() -> None:
    args = build_parser().parse_args(
        ["--symbol-limit", "30", "--deny-symbol", "otcx,pink", "--deny-symbol", "GREY"]
    )
    config = config_from_args(args)
    assert config.symbol_limit == 30
    assert config.denied_symbols == {"OTCX", "PINK", "GREY"}
