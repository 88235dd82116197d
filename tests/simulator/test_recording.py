"""Record a session's raw frames, then replay the file through the simulator."""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest
from alpaca.data.live.stock import StockDataStream
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import QueryOrderStatus
from alpaca.trading.requests import GetOrdersRequest
from alpaca.trading.stream import TradingStream
from websockets.sync.client import connect

from alpaca_broker.recording import (
    RecordingError,
    RecordingReader,
    RecordingWriter,
    read_recording,
)
from simulator import Simulator, messages
from tests.harness.wait import wait_until
from tests.simulator.conftest import MARKET_CHANNELS, Running, collector, subscribe

CONTROL = {"success", "error", "subscription"}
ALL_DATA = {
    "action": "subscribe",
    "trades": ["*"],
    "quotes": ["*"],
    "bars": ["*"],
    "updatedBars": ["*"],
    "dailyBars": ["*"],
    "statuses": ["*"],
    "lulds": ["*"],
}


def record_data(sim: Simulator, writer: RecordingWriter, enough: int) -> None:
    """Record what a msgpack data client receives until ``enough`` market messages and a bar."""
    with connect(sim.data_url, additional_headers={"Content-Type": "application/msgpack"}) as ws:
        writer.write("data", ws.recv(timeout=5))
        ws.send(msgpack.packb({"action": "auth", "key": "k", "secret": "s"}))
        ws.send(msgpack.packb(ALL_DATA))
        count, types = 0, set[str]()
        while count < enough or "b" not in types:
            frame = ws.recv(timeout=5)
            writer.write("data", frame)
            batch = msgpack.unpackb(frame)
            types.update(m["T"] for m in batch)
            count += sum(m["T"] not in CONTROL for m in batch)


def record_trading(sim: Simulator, writer: RecordingWriter, enough: int) -> None:
    with connect(sim.trading_url) as ws:
        ws.send(json.dumps({"action": "authenticate", "data": {"key_id": "k", "secret_key": "s"}}))
        ws.send(json.dumps({"action": "listen", "data": {"streams": ["trade_updates"]}}))
        updates = 0
        while updates < enough:
            frame = ws.recv(timeout=10)
            writer.write("trading", frame)
            updates += json.loads(frame)["stream"] == "trade_updates"


def test_a_recorded_session_replays_to_the_same_messages(tmp_path: Path) -> None:
    path = tmp_path / "session.jsonl.gz"
    live = Simulator(
        synthetic=True,
        rate=3000,
        clock_speed=60,
        order_rate=30,
        order_steps=(0.01, 0.05),
        seed=11,
        mix={"t": 40, "q": 50, "s": 3, "l": 3, "c": 2, "x": 2},
    )
    with live, RecordingWriter(path, meta={"source": "test"}) as writer:
        trading = threading.Thread(target=record_trading, args=(live, writer, 40))
        trading.start()
        record_data(live, writer, 1500)
        trading.join(20)
    frames = read_recording(path)
    assert RecordingReader(path).header["meta"] == {"source": "test"}
    expected_data = [
        m
        for f in frames
        if f.stream == "data"
        for m in msgpack.unpackb(f.payload)
        if m["T"] not in CONTROL
    ]
    expected_updates = [
        json.loads(f.payload)
        for f in frames
        if f.stream == "trading" and json.loads(f.payload)["stream"] == "trade_updates"
    ]
    assert {m["T"] for m in expected_data} >= set("tqbslcx")

    data, data_handler = collector()
    updates, update_handler = collector()
    with Simulator(replay=path, replay_speed=None) as replay:
        stream = StockDataStream("key", "secret", raw_data=True, url_override=replay.data_url)
        subscribe(stream, data_handler, (*MARKET_CHANNELS, "trading_statuses"), "*")
        stream.register_trade_corrections(data_handler)
        stream.register_trade_cancels(data_handler)
        stream._handlers["lulds"]["*"] = data_handler
        orders = TradingStream("key", "secret", raw_data=True, url_override=replay.trading_url)
        orders.subscribe_trade_updates(update_handler)
        with Running(stream, replay, "data"), Running(orders, replay, "trading"):
            wait_until(replay.replay_done, timeout=20, message="replay done")
            wait_until(
                lambda: len(data) == len(expected_data) and len(updates) == len(expected_updates),
                message="all delivered",
            )
        client = TradingClient("key", "secret", url_override=replay.rest_url, raw_data=True)
        rest = client.get_orders(GetOrdersRequest(status=QueryOrderStatus.ALL, limit=500))
    assert data == expected_data
    assert updates == expected_updates
    latest = {u["data"]["order"]["id"]: u["data"]["order"] for u in expected_updates}
    assert {o["id"]: o for o in rest} == latest


def test_replay_keeps_the_recorded_pace_scaled_by_speed(tmp_path: Path) -> None:
    path = tmp_path / "paced.jsonl"
    start = time.time_ns()
    with RecordingWriter(path) as writer:
        for i in range(3):
            trade = messages.trade("AAPL", start + i, trade_id=i, price=1.0, size=1)
            writer.write("data", msgpack.packb([trade]), received_ns=start + i * 400_000_000)
    arrivals: list[float] = []

    async def handler(message: dict[str, Any]) -> None:
        arrivals.append(time.monotonic())

    with Simulator(replay=path, replay_speed=2.0) as sim:
        stream = StockDataStream("key", "secret", raw_data=True, url_override=sim.data_url)
        stream.subscribe_trades(handler, "AAPL")
        with Running(stream, sim, "data"):
            wait_until(lambda: len(arrivals) == 3, message="three trades")
    assert arrivals[-1] - arrivals[0] >= 0.35  # 0.8 s recorded, at twice the speed


def test_recording_files_round_trip_and_bad_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    with RecordingWriter(path, flush_every=10) as writer:
        writer.write("data", b"\x91\x80", received_ns=5)
        writer.write("trading", '{"stream":"listening"}', received_ns=6)
        with pytest.raises(ValueError):
            writer.write("stocks", b"")
    frames = read_recording(path)
    assert [(f.ns, f.stream, f.payload) for f in frames] == [
        (5, "data", b"\x91\x80"),
        (6, "trading", '{"stream":"listening"}'),
    ]
    (tmp_path / "bad.jsonl").write_text('{"format": "something else"}\n')
    with pytest.raises(RecordingError):
        RecordingReader(tmp_path / "bad.jsonl")
    path.write_text(path.read_text() + "not json\n")
    with pytest.raises(RecordingError, match=":4"):
        read_recording(path)


@pytest.mark.parametrize("name", ["r.jsonl", "r.jsonl.gz"])
def test_a_recording_is_private_and_a_second_run_appends_to_it(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    with RecordingWriter(path, meta={"run": 1}) as writer:
        writer.write("data", b"\x91\x80", received_ns=1)
        writer.write("crypto", b"\x91\x81", received_ns=2)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with RecordingWriter(path, meta={"run": 2}) as writer:
        writer.write("options", b"\x91\x82", received_ns=3)
        writer.write("news", b"\x91\x83", received_ns=4)
    assert RecordingReader(path).header["meta"] == {"run": 1}  # the header stays first
    assert [(f.ns, f.stream) for f in read_recording(path)] == [
        (1, "data"),
        (2, "crypto"),
        (3, "options"),
        (4, "news"),
    ]


def test_an_existing_readable_recording_is_made_private_when_reopened(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    RecordingWriter(path).close()
    os.chmod(path, 0o644)
    RecordingWriter(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_recording(path) == []
