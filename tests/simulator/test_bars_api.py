"""The historical bars REST API: alpaca-py's historical clients, paging, agreement with the
streamed bars, fault injection and the request log; and the dead-slot fault per endpoint."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import msgpack
import pytest
import requests
from alpaca.common.exceptions import APIError
from alpaca.data.historical.crypto import CryptoHistoricalDataClient
from alpaca.data.historical.stock import StockHistoricalDataClient
from alpaca.data.live.crypto import CryptoDataStream
from alpaca.data.live.stock import StockDataStream
from alpaca.data.requests import CryptoBarsRequest, StockBarsRequest
from alpaca.data.timeframe import TimeFrame
from websockets.sync.client import connect

from simulator import Simulator
from simulator.bars import MINUTE_NS, UPDATE_DELAY_NS
from tests.harness.wait import wait_until
from tests.simulator.conftest import Running, collector

KEYS = {"APCA-API-KEY-ID": "k", "APCA-API-SECRET-KEY": "s"}


def _dt(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, UTC)


def _as_rest(message: dict[str, Any]) -> dict[str, Any]:
    keys = ("o", "h", "l", "c", "v", "n", "vw")
    return {"t": message["t"].to_unix_nano(), **{k: message[k] for k in keys}}


def _rest_rows(rows: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    out = {}
    for row in rows:
        ns = int(datetime.fromisoformat(row["t"].replace("Z", "+00:00")).timestamp()) * 10**9
        out[ns] = {"t": ns, **{k: row[k] for k in ("o", "h", "l", "c", "v", "n", "vw")}}
    return out


@pytest.mark.parametrize("asset", ["stock", "crypto"])
def test_rest_bars_equal_the_streamed_bars_of_the_same_minutes(asset: str) -> None:
    received, handler = collector()
    symbol = "AAPL" if asset == "stock" else "BTC/USD"
    with Simulator(synthetic=True, rate=500, clock_speed=120, seed=5) as sim:
        if asset == "stock":
            stream: Any = StockDataStream("k", "s", raw_data=True, url_override=sim.data_url)
            kind = "data"
        else:
            stream = CryptoDataStream("k", "s", raw_data=True, url_override=sim.crypto_url)
            kind = "crypto"
        stream.subscribe_bars(handler, symbol)
        stream.subscribe_updated_bars(handler, symbol)
        with Running(stream, sim, kind):
            wait_until(lambda: sum(m["T"] == "b" for m in received) >= 4, timeout=30)
            streamed: dict[int, dict[str, Any]] = {}
            for m in received:  # an updated bar replaces its minute's bar
                streamed[m["t"].to_unix_nano()] = _as_rest(m)
            # compare only minutes whose update (if any) is already due
            settled = {
                t: b for t, b in streamed.items() if t + UPDATE_DELAY_NS < sim.market_now_ns()
            }
            first, last = min(streamed), max(streamed)
            window = {
                "symbol_or_symbols": symbol,
                "timeframe": TimeFrame.Minute,
                "start": _dt(first),
                "end": _dt(last),
            }
            if asset == "stock":
                stock = StockHistoricalDataClient(
                    "k", "s", raw_data=True, url_override=sim.data_api_url
                )
                raw = stock.get_stock_bars(StockBarsRequest(**window, feed="iex"))
            else:
                crypto = CryptoHistoricalDataClient(raw_data=True, url_override=sim.data_api_url)
                raw = crypto.get_crypto_bars(CryptoBarsRequest(**window))
    rest = _rest_rows(raw[symbol])
    assert sorted(rest) == list(range(first, last + 1, MINUTE_NS))  # every minute, once
    assert settled
    for t, bar in settled.items():
        assert rest[t] == bar
    value = raw[symbol][0]["v"]
    assert isinstance(value, int if asset == "stock" else float)


def test_rest_pages_with_next_page_token_and_never_answers_the_open_minute() -> None:
    with Simulator() as sim:
        now = sim.market_now_ns()
        start = now - now % MINUTE_NS - 10 * MINUTE_NS
        url = f"{sim.data_api_url}/v2/stocks/bars"
        params: dict[str, Any] = {
            "symbols": "AAPL,MSFT",
            "timeframe": "1Min",
            "start": _dt(start).isoformat(),
            "limit": 7,
            "feed": "iex",
        }
        pages: list[dict[str, Any]] = []
        while True:
            body = requests.get(url, params=params, headers=KEYS, timeout=5).json()
            pages.append(body)
            if not body["next_page_token"]:
                break
            params["page_token"] = body["next_page_token"]
        whole = requests.get(
            url, params={**params, "limit": 1000, "page_token": ""}, headers=KEYS, timeout=5
        ).json()
        log = sim.bars_requests()
    assert len(pages) == 3  # 20 bars, 7 per page
    merged: dict[str, list[Any]] = {}
    for page in pages:
        for symbol, rows in page["bars"].items():
            merged.setdefault(symbol, []).extend(rows)
    assert merged == whole["bars"]
    assert [len(rows) for rows in merged.values()] == [10, 10]
    open_minute = now - now % MINUTE_NS
    assert max(max(_rest_rows(rows)) for rows in merged.values()) < open_minute
    assert [r.path for r in log] == ["/v2/stocks/bars"] * 4
    assert log[0].params["symbols"] == "AAPL,MSFT"
    assert log[1].params["page_token"]


def test_injected_500_then_429_with_rate_limit_headers_then_bars_again() -> None:
    with Simulator() as sim:
        client = StockHistoricalDataClient("k", "s", raw_data=True, url_override=sim.data_api_url)
        request = StockBarsRequest(
            symbol_or_symbols="SPY",
            timeframe=TimeFrame.Minute,
            start=_dt(sim.market_now_ns() - 5 * MINUTE_NS),
        )
        sim.fail_bars(1, 500)
        with pytest.raises(APIError):
            client.get_stock_bars(request)
        sim.fail_bars(1, 429, retry_after=3)
        answer = requests.get(
            f"{sim.data_api_url}/v1beta3/crypto/us/bars",
            params={"symbols": "BTC/USD", "timeframe": "1Min"},
            timeout=5,
        )
        assert answer.status_code == 429
        assert answer.headers["Retry-After"] == "3"
        assert answer.headers["X-RateLimit-Remaining"] == "0"
        assert int(answer.headers["X-RateLimit-Reset"]) >= time.time()
        assert len(client.get_stock_bars(request)["SPY"]) >= 4
        assert [r.status for r in sim.bars_requests()] == [500, 429, 200]


def _auth(url: str) -> dict[str, Any]:
    with connect(url, additional_headers={"Content-Type": "application/msgpack"}) as ws:
        ws.recv(5)
        ws.send(msgpack.packb({"action": "auth", "key": "same", "secret": "s"}))
        reply: dict[str, Any] = msgpack.unpackb(ws.recv(5))[0]
        return reply


def test_a_dead_clients_slot_is_kept_for_n_seconds_on_its_endpoint_only() -> None:
    with Simulator() as sim:
        sim.keep_dead_slots(1.5)
        ws = connect(sim.crypto_url, additional_headers={"Content-Type": "application/msgpack"})
        ws.recv(5)
        ws.send(msgpack.packb({"action": "auth", "key": "same", "secret": "s"}))
        assert msgpack.unpackb(ws.recv(5))[0]["msg"] == "authenticated"
        assert sim.drop("crypto") == 1  # no close handshake
        dropped = time.monotonic()
        assert _auth(sim.crypto_url)["code"] == 406
        assert _auth(sim.news_url)["msg"] == "authenticated"  # its own limit
        wait_until(lambda: _auth(sim.crypto_url).get("msg") == "authenticated", timeout=10)
        assert time.monotonic() - dropped >= 1.4
        ws.close()
