"""Captured payload files (tests/fixtures/payloads) and builders of real-shaped messages."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import msgpack

PAYLOADS = Path(__file__).resolve().parents[1] / "fixtures" / "payloads"
RECEIVED_NS = 1_700_000_000_123_456_789


def load_json(name: str) -> Any:
    return json.loads((PAYLOADS / name).read_text("utf-8"))


def json_messages() -> list[dict[str, Any]]:
    """Every market-data message of the JSON-mode capture (string timestamps), in order."""
    return [msg for frame in load_json("market_data.json") for msg in frame]


def msgpack_messages() -> list[dict[str, Any]]:
    """The same messages as Alpaca sends them in msgpack mode (``t`` a msgpack Timestamp)."""
    frames = msgpack.unpackb((PAYLOADS / "market_data.msgpack").read_bytes())
    return [msg for frame in frames for msg in msgpack.unpackb(frame)]


def producer_messages() -> list[dict[str, Any]]:
    """The msgpack messages as the producer forwards them: ``t`` converted to int ns."""
    out = []
    for msg in msgpack_messages():
        msg = dict(msg)
        msg["t"] = msg["t"].to_unix_nano()
        out.append(msg)
    return out


def expected_events() -> list[bytes]:
    """The exact event JSON of each captured message, received at RECEIVED_NS."""
    return (PAYLOADS / "market_data.expected.jsonl").read_bytes().splitlines()


def trade_updates() -> list[dict[str, Any]]:
    """The ``data`` objects of the captured ``trade_updates`` messages (fresh copies)."""
    return [copy.deepcopy(msg["data"]) for msg in load_json("trade_updates.json")]


def trade_update(order_symbol: str, event: str) -> dict[str, Any]:
    """The captured ``data`` object of ``event`` for the order of ``order_symbol``."""
    for data in trade_updates():
        if data["order"]["symbol"] == order_symbol and data["event"] == event:
            return data
    raise LookupError((order_symbol, event))


def one_of_each_type(symbol: str = "AAPL") -> list[dict[str, Any]]:
    """One captured message of every market-data type, all for ``symbol``."""
    seen: dict[str, dict[str, Any]] = {}
    for msg in producer_messages():
        seen.setdefault(msg["T"], {**msg, "S": symbol})
    assert sorted(seen) == sorted("tqbudslcx")
    return list(seen.values())


def bar(symbol: str, ts_ns: int, close: float, code: str = "b") -> dict[str, Any]:
    """A minute bar as the producer forwards it."""
    return {
        "T": code, "S": symbol, "o": close, "h": close, "l": close, "c": close,
        "v": 100, "n": 3, "vw": close, "t": ts_ns,
    }  # fmt: skip


def stream_messages(name: str) -> list[dict[str, Any]]:
    """Every message of capture ``<name>.json`` (crypto, options, news), in order."""
    return [msg for frame in load_json(f"{name}.json") for msg in frame]


def stream_expected(name: str) -> list[bytes]:
    """The exact event JSON of each message of ``<name>.json``, received at RECEIVED_NS."""
    return (PAYLOADS / f"{name}.expected.jsonl").read_bytes().splitlines()


def as_producer_sends(msg: dict[str, Any], *keys: str) -> dict[str, Any]:
    """``msg`` with its RFC 3339 ``keys`` as int ns, as the producer converts msgpack ones."""
    from alpaca_broker.timestamps import parse_rfc3339

    return {**msg, **{key: parse_rfc3339(msg[key]) for key in keys}}
