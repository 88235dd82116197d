"""Builders for the stock data stream's messages, ``T`` always the first key.

Pure functions; timestamps are nanosecond integers turned into msgpack Timestamps here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from simulator.clock import to_timestamp
from simulator.codec import Message

#: Message type -> the subscription channel that delivers it. Corrections and cancel
#: errors ride on ``trades`` (the server implies them from a trades subscription).
CHANNEL_OF: Mapping[str, str] = {
    "t": "trades",
    "q": "quotes",
    "b": "bars",
    "u": "updatedBars",
    "d": "dailyBars",
    "s": "statuses",
    "l": "lulds",
    "c": "trades",
    "x": "trades",
    "i": "imbalances",
}

#: Exchange codes alpaca-py's ``Exchange`` enum accepts (``c``/``x`` messages must use one).
EXCHANGES: Sequence[str] = tuple("ZIMULWXBDJPQSVAENTYCHK")


def trade(
    symbol: str,
    ts_ns: int,
    *,
    trade_id: int,
    price: float,
    size: int,
    exchange: str = "V",
    conditions: Sequence[str] = ("@",),
    tape: str = "C",
) -> Message:
    """A trade ``t``."""
    return {
        "T": "t",
        "S": symbol,
        "i": trade_id,
        "x": exchange,
        "p": float(price),
        "s": size,
        "c": list(conditions),
        "z": tape,
        "t": to_timestamp(ts_ns),
    }


def quote(
    symbol: str,
    ts_ns: int,
    *,
    bid_price: float,
    bid_size: int,
    ask_price: float,
    ask_size: int,
    bid_exchange: str = "V",
    ask_exchange: str = "V",
    conditions: Sequence[str] = ("R",),
    tape: str = "C",
) -> Message:
    """A quote ``q``."""
    return {
        "T": "q",
        "S": symbol,
        "bx": bid_exchange,
        "bp": float(bid_price),
        "bs": bid_size,
        "ax": ask_exchange,
        "ap": float(ask_price),
        "as": ask_size,
        "c": list(conditions),
        "z": tape,
        "t": to_timestamp(ts_ns),
    }


def bar(
    kind: str,
    symbol: str,
    ts_ns: int,
    *,
    open_: float,
    high: float,
    low: float,
    close: float,
    volume: float,
    trade_count: int,
    vwap: float,
) -> Message:
    """A minute bar ``b``, updated bar ``u`` or daily bar ``d`` (always with ``n`` and ``vw``)."""
    if kind not in ("b", "u", "d"):
        raise ValueError(f"not a bar type: {kind!r}")
    return {
        "T": kind,
        "S": symbol,
        "o": float(open_),
        "h": float(high),
        "l": float(low),
        "c": float(close),
        "v": volume,
        "t": to_timestamp(ts_ns),
        "n": trade_count,
        "vw": float(vwap),
    }


def status(
    symbol: str,
    ts_ns: int,
    *,
    status_code: str,
    status_message: str,
    reason_code: str,
    reason_message: str,
    tape: str = "C",
) -> Message:
    """A trading status ``s`` (all of ``sc sm rc rm z`` present, as alpaca-py requires)."""
    return {
        "T": "s",
        "S": symbol,
        "sc": status_code,
        "sm": status_message,
        "rc": reason_code,
        "rm": reason_message,
        "t": to_timestamp(ts_ns),
        "z": tape,
    }


def luld(
    symbol: str, ts_ns: int, *, limit_up: float, limit_down: float, indicator: str, tape: str = "C"
) -> Message:
    """A limit up / limit down band ``l``."""
    return {
        "T": "l",
        "S": symbol,
        "u": float(limit_up),
        "d": float(limit_down),
        "i": indicator,
        "t": to_timestamp(ts_ns),
        "z": tape,
    }


def correction(
    symbol: str,
    ts_ns: int,
    *,
    exchange: str,
    original: tuple[int, float, int, Sequence[str]],
    corrected: tuple[int, float, int, Sequence[str]],
    tape: str = "C",
) -> Message:
    """A trade correction ``c``; ``original``/``corrected`` are (id, price, size, conditions)."""
    if exchange not in EXCHANGES:
        raise ValueError(f"correction exchange must be an Exchange enum code: {exchange!r}")
    oi, op, os_, oc = original
    ci, cp, cs, cc = corrected
    return {
        "T": "c",
        "S": symbol,
        "x": exchange,
        "oi": oi,
        "op": float(op),
        "os": os_,
        "oc": list(oc),
        "ci": ci,
        "cp": float(cp),
        "cs": cs,
        "cc": list(cc),
        "z": tape,
        "t": to_timestamp(ts_ns),
    }


def cancel_error(
    symbol: str,
    ts_ns: int,
    *,
    trade_id: int,
    exchange: str,
    price: float,
    size: int,
    action: str = "C",
    tape: str = "C",
) -> Message:
    """A trade cancel (``a`` = ``C``) or error (``E``) ``x``."""
    if exchange not in EXCHANGES:
        raise ValueError(f"cancel exchange must be an Exchange enum code: {exchange!r}")
    return {
        "T": "x",
        "S": symbol,
        "i": trade_id,
        "x": exchange,
        "p": float(price),
        "s": size,
        "a": action,
        "z": tape,
        "t": to_timestamp(ts_ns),
    }
