"""The data and trading wire protocols byte for byte, with a plain websockets client."""

from __future__ import annotations

import json
from typing import Any

import msgpack
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from simulator import Credentials, Simulator, SimulatorConfig, messages
from tests.harness.wait import wait_until

MSGPACK = {"Content-Type": "application/msgpack"}


def ask(ws: ClientConnection, message: dict[str, Any]) -> list[dict[str, Any]]:
    ws.send(msgpack.packb(message))
    reply: list[dict[str, Any]] = msgpack.unpackb(ws.recv(timeout=5))
    return reply


def test_data_handshake_errors_and_full_subscription_reply(sim: Simulator) -> None:
    with connect(sim.data_url, additional_headers=MSGPACK) as ws:
        welcome = ws.recv(timeout=5)
        assert isinstance(welcome, bytes)
        assert msgpack.unpackb(welcome) == [{"T": "success", "msg": "connected"}]
        assert ask(ws, {"action": "subscribe", "trades": ["AAPL"]}) == [
            {"T": "error", "code": 401, "msg": "not authenticated"}
        ]
        ws.send(b"\xc1garbage")
        assert msgpack.unpackb(ws.recv(timeout=5))[0]["code"] == 400
        assert ask(ws, {"action": "auth", "key": "k", "secret": "s"}) == [
            {"T": "success", "msg": "authenticated"}
        ]
        assert ask(ws, {"action": "auth", "key": "k", "secret": "s"})[0]["code"] == 403
        # alpaca-py's subscribe: action last, fragmented; the reply lists every channel
        ws.send(
            [
                msgpack.packb(
                    {
                        "trades": ["AAPL"],
                        "quotes": ["AMD", "CLDR"],
                        "bars": ["*"],
                        "action": "subscribe",
                    }
                ),
                b"",
            ]
        )
        assert msgpack.unpackb(ws.recv(timeout=5)) == [
            {
                "T": "subscription",
                "trades": ["AAPL"],
                "quotes": ["AMD", "CLDR"],
                "bars": ["*"],
                "updatedBars": [],
                "dailyBars": [],
                "statuses": [],
                "lulds": [],
                "corrections": ["AAPL"],
                "cancelErrors": ["AAPL"],
            }
        ]
        reply = ask(ws, {"action": "unsubscribe", "bars": ["*"]})
        assert reply[0]["bars"] == []
        assert reply[0]["quotes"] == ["AMD", "CLDR"]
        assert ask(ws, {"action": "subscribe", "news": ["*"]})[0] == {
            "T": "error",
            "code": 410,
            "msg": "invalid subscribe action for this feed",
        }
        assert ask(ws, {"action": "subscribe", "trades": ["not a symbol"]})[0]["code"] == 400
        assert ask(ws, {"action": "subscribe", "trades": "AAPL"})[0]["code"] == 400
        assert ask(ws, {"action": "dance"})[0]["code"] == 400


def test_data_frames_are_msgpack_arrays_with_timestamp_ext(sim: Simulator) -> None:
    with connect(sim.data_url, additional_headers=MSGPACK) as ws:
        ws.recv(timeout=5)
        ask(ws, {"action": "auth", "key": "k", "secret": "s"})
        ask(ws, {"action": "subscribe", "trades": ["AAPL"]})
        sim.push_market(
            [messages.trade("AAPL", 1_700_000_000_000_000_001, trade_id=1, price=10.0, size=5)]
        )
        frame = ws.recv(timeout=5)
    assert isinstance(frame, bytes)
    assert frame[0] == 0x91
    assert frame[1:5] == b"\x89\xa1T\xa1"  # a 9-entry map whose first key is "T"
    assert b"\xd7\xff" in frame  # timestamp 64 (fixext8, type -1): nanoseconds kept
    [trade] = msgpack.unpackb(frame)
    assert trade["t"].to_unix_nano() == 1_700_000_000_000_000_001


def test_json_clients_get_text_frames_with_rfc3339_timestamps(sim: Simulator) -> None:
    with connect(sim.data_url) as ws:
        assert json.loads(ws.recv(timeout=5)) == [{"T": "success", "msg": "connected"}]
        ws.send(json.dumps({"action": "auth", "key": "k", "secret": "s"}))
        ws.recv(timeout=5)
        ws.send(json.dumps({"action": "subscribe", "trades": ["AAPL"]}))
        ws.recv(timeout=5)
        sim.push_market(
            [messages.trade("AAPL", 1_700_000_000_000_000_100, trade_id=1, price=10.0, size=5)]
        )
        frame = ws.recv(timeout=5)
    assert isinstance(frame, str)
    assert json.loads(frame)[0]["t"] == "2023-11-14T22:13:20.0000001Z"


def test_bad_credentials_get_402_when_a_key_is_configured() -> None:
    config = SimulatorConfig(credentials=Credentials("AKTEST", "secret"))
    with Simulator(config) as sim, connect(sim.data_url, additional_headers=MSGPACK) as ws:
        ws.recv(timeout=5)
        assert ask(ws, {"action": "auth", "key": "AKTEST", "secret": "wrong"}) == [
            {"T": "error", "code": 402, "msg": "auth failed"}
        ]
        assert ask(ws, {"action": "auth", "key": "AKTEST", "secret": "secret"})[0] == {
            "T": "success",
            "msg": "authenticated",
        }


def test_no_auth_in_time_gets_404_and_a_close() -> None:
    with (
        Simulator(auth_timeout=0.2) as sim,
        connect(sim.data_url, additional_headers=MSGPACK) as ws,
    ):
        ws.recv(timeout=5)
        assert msgpack.unpackb(ws.recv(timeout=5)) == [
            {"T": "error", "code": 404, "msg": "auth timeout"}
        ]
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)


def test_symbol_limit_405_leaves_the_subscription_unchanged() -> None:
    with Simulator(symbol_limit=2) as sim, connect(sim.data_url, additional_headers=MSGPACK) as ws:
        ws.recv(timeout=5)
        ask(ws, {"action": "auth", "key": "k", "secret": "s"})
        ask(ws, {"action": "subscribe", "trades": ["AAPL"], "quotes": ["MSFT"]})
        assert ask(ws, {"action": "subscribe", "quotes": ["SPY"]})[0]["code"] == 405
        assert sim.subscriptions() == [{"trades": ["AAPL"], "quotes": ["MSFT"]}]


def test_test_feed_has_the_short_reply_and_serves_fakepaca(sim: Simulator) -> None:
    sim.set_market_rate(500)
    sim.set_market(True)
    with connect(sim.data_url_for("test"), additional_headers=MSGPACK) as ws:
        ws.recv(timeout=5)
        ask(ws, {"action": "auth", "key": "k", "secret": "s"})
        assert ask(ws, {"action": "subscribe", "quotes": ["*"], "bars": ["FAKEPACA"]}) == [
            {"T": "subscription", "trades": [], "quotes": ["*"], "bars": ["FAKEPACA"]}
        ]
        assert {m["S"] for m in msgpack.unpackb(ws.recv(timeout=5))} == {"FAKEPACA"}


def test_trading_stream_is_silent_until_auth_then_authorizes_and_listens(
    sim: Simulator,
) -> None:
    with connect(sim.trading_url) as ws:
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.3)  # no welcome message on the trading stream
        ws.send(json.dumps({"action": "listen", "data": {"streams": ["trade_updates"]}}))
        assert json.loads(ws.recv(timeout=5)) == {
            "stream": "authorization",
            "data": {"status": "unauthorized", "action": "listen"},
        }
        ws.send(json.dumps({"action": "authenticate", "data": {"key_id": "k", "secret_key": "s"}}))
        reply = ws.recv(timeout=5)
        assert isinstance(reply, bytes)  # JSON in binary frames, as the paper endpoint
        assert json.loads(reply) == {
            "stream": "authorization",
            "data": {"status": "authorized", "action": "authenticate"},
        }
        ws.send(json.dumps({"action": "listen", "data": {"streams": ["trade_updates", "x"]}}))
        assert json.loads(ws.recv(timeout=5)) == {
            "stream": "listening",
            "data": {"streams": ["trade_updates"]},
        }
        order = sim.orders.submit("AAPL", qty="3")
        update = json.loads(ws.recv(timeout=5))
        assert update["stream"] == "trade_updates"
        assert update["data"]["event"] == "new"
        assert update["data"]["order"]["id"] == order["id"]


def test_trading_stream_accepts_the_auth_form_and_refuses_bad_keys() -> None:
    config = SimulatorConfig(credentials=Credentials("AKTEST", "secret"), trading_binary=False)
    with Simulator(config) as sim, connect(sim.trading_url) as ws:
        ws.send(json.dumps({"action": "auth", "key": "AKTEST", "secret": "nope"}))
        refused = ws.recv(timeout=5)
        assert isinstance(refused, str)  # text frames when configured
        assert json.loads(refused)["data"] == {
            "status": "unauthorized",
            "action": "authenticate",
            "message": "access key verification failed",
        }
        ws.send(json.dumps({"action": "auth", "key": "AKTEST", "secret": "secret"}))
        assert json.loads(ws.recv(timeout=5))["data"]["status"] == "authorized"
        wait_until(lambda: sim.stats()["auth_failures"] == {"trading": 1}, message="counted")


def test_header_auth_is_answered_without_an_auth_message(sim: Simulator) -> None:
    headers = {**MSGPACK, "APCA-API-KEY-ID": "k", "APCA-API-SECRET-KEY": "s"}
    with connect(sim.data_url, additional_headers=headers) as ws:
        assert msgpack.unpackb(ws.recv(timeout=5)) == [{"T": "success", "msg": "connected"}]
        assert msgpack.unpackb(ws.recv(timeout=5)) == [{"T": "success", "msg": "authenticated"}]
