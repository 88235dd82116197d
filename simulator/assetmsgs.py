"""Builders for the crypto, option and news streams' messages, ``T`` always first.

Pure functions; timestamps are nanosecond integers turned into msgpack Timestamps here
(news ``created_at``/``updated_at`` too, as alpaca-py calls ``.to_datetime()`` on them).
"""

from __future__ import annotations

from collections.abc import Sequence

from simulator import messages
from simulator.bars import MinuteBar
from simulator.clock import to_timestamp
from simulator.codec import Message

#: OPRA participant codes an option trade or quote may carry.
OPRA_EXCHANGES: Sequence[str] = tuple("ABCDEHIJMNOPQSTWXZ")


def crypto_trade(
    symbol: str, ts_ns: int, *, trade_id: int, price: float, size: float, taker: str
) -> Message:
    """A crypto trade: float size, taker side ``tks`` (``B`` or ``S``)."""
    return {
        "T": "t",
        "S": symbol,
        "p": float(price),
        "s": float(size),
        "t": to_timestamp(ts_ns),
        "i": trade_id,
        "tks": taker,
    }


def crypto_quote(
    symbol: str, ts_ns: int, *, bid: float, bid_size: float, ask: float, ask_size: float
) -> Message:
    """A crypto quote: no exchanges, no conditions."""
    return {
        "T": "q",
        "S": symbol,
        "bp": float(bid),
        "bs": float(bid_size),
        "ap": float(ask),
        "as": float(ask_size),
        "t": to_timestamp(ts_ns),
    }


def orderbook(
    symbol: str,
    ts_ns: int,
    bids: Sequence[tuple[float, float]],
    asks: Sequence[tuple[float, float]],
    *,
    reset: bool,
) -> Message:
    """An order book message: a full snapshot (``r: true``) or changed levels (size 0
    removes a level)."""
    message: Message = {
        "T": "o",
        "S": symbol,
        "t": to_timestamp(ts_ns),
        "b": [{"p": float(p), "s": float(s)} for p, s in bids],
        "a": [{"p": float(p), "s": float(s)} for p, s in asks],
    }
    if reset:
        message["r"] = True
    return message


def option_trade(
    symbol: str, ts_ns: int, *, price: float, size: int, exchange: str, condition: str
) -> Message:
    """An option trade: ``c`` is one string."""
    return {
        "T": "t",
        "S": symbol,
        "t": to_timestamp(ts_ns),
        "p": float(price),
        "s": size,
        "x": exchange,
        "c": condition,
    }


def option_quote(
    symbol: str,
    ts_ns: int,
    *,
    bid: float,
    bid_size: int,
    ask: float,
    ask_size: int,
    exchange: str,
    condition: str = "A",
) -> Message:
    """An option quote: ``c`` is one string."""
    return {
        "T": "q",
        "S": symbol,
        "t": to_timestamp(ts_ns),
        "bx": exchange,
        "bp": float(bid),
        "bs": bid_size,
        "ax": exchange,
        "ap": float(ask),
        "as": ask_size,
        "c": condition,
    }


def news(
    article_id: int,
    *,
    headline: str,
    summary: str,
    author: str,
    created_ns: int,
    updated_ns: int,
    content: str,
    url: str,
    symbols: Sequence[str],
    source: str = "benzinga",
) -> Message:
    """A news article ``n`` (no ``S``: ``symbols`` names one or more)."""
    return {
        "T": "n",
        "id": article_id,
        "headline": headline,
        "summary": summary,
        "author": author,
        "created_at": to_timestamp(created_ns),
        "updated_at": to_timestamp(updated_ns),
        "url": url,
        "content": content,
        "symbols": list(symbols),
        "source": source,
    }


def bar_message(kind: str, symbol: str, bar: MinuteBar) -> Message:
    """A ``b``/``u``/``d`` bar message from a bar's values (stock or crypto)."""
    return messages.bar(
        kind,
        symbol,
        bar.start_ns,
        open_=bar.o,
        high=bar.h,
        low=bar.low,
        close=bar.c,
        volume=bar.v,
        trade_count=bar.n,
        vwap=bar.vw,
    )
