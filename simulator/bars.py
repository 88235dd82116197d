"""The synthetic market's minute bars: a deterministic function of (seed, symbol, minute).

Every completed minute of every symbol has one bar, whether or not a client was connected,
so the stream and the historical REST API agree by construction: the stream sends
``minute_bar(symbol, m)`` after minute ``m`` ends, REST answers the same values. Some
minutes get a late print (``has_update``): the stream then sends the ``updatedBar`` half a
minute into the next minute, and from then on REST answers the updated values.

Prices follow a smooth path (``level``) with hashed noise, so the close of one minute is the
open of the next; streamed trades and quotes stay inside their minute's bar range. Stock
volumes and trade counts are integers, crypto volumes floats.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, replace
from functools import lru_cache

MINUTE_NS = 60_000_000_000
UPDATE_DELAY_NS = MINUTE_NS + MINUTE_NS // 2  # after the minute's start
_CRYPTO_ANCHORS = {"BTC/USD": 65_000.0, "ETH/USD": 3_200.0, "SOL/USD": 150.0, "LTC/USD": 80.0}


@dataclass(frozen=True)
class MinuteBar:
    """One bar's values; ``start_ns`` is the minute's start."""

    start_ns: int
    o: float
    h: float
    low: float
    c: float
    v: float
    n: int
    vw: float


def _unit(seed: int, symbol: str, minute: int, salt: str) -> float:
    """A hashed uniform number in [0, 1) for (seed, symbol, minute, salt)."""
    digest = hashlib.blake2b(f"{seed}|{symbol}|{minute}|{salt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def is_crypto(symbol: str) -> bool:
    """Crypto pairs are written ``BASE/QUOTE``."""
    return "/" in symbol


def anchor(symbol: str) -> float:
    """The price ``symbol``'s path swings around."""
    if symbol in _CRYPTO_ANCHORS:
        return _CRYPTO_ANCHORS[symbol]
    seed = sum(map(ord, symbol))
    cents = 2000 + (seed * 7919) % 48000
    return cents / 10 if is_crypto(symbol) else cents / 100


class BarModel:
    """Deterministic minute bars and the price path they follow."""

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed or 0
        self.minute_bar = lru_cache(maxsize=65_536)(self._minute_bar)

    def level(self, symbol: str, minute: int) -> float:
        """The price at the start of ``minute`` (epoch minutes): a smooth path plus noise."""
        phase = _unit(self.seed, symbol, 0, "phase") * 2 * math.pi
        swing = 0.02 * math.sin(2 * math.pi * minute / 390 + phase)
        wiggle = 0.004 * math.sin(2 * math.pi * minute / 37 + 2 * phase)
        noise = 0.001 * (_unit(self.seed, symbol, minute, "level") - 0.5)
        return _price(anchor(symbol) * (1 + swing + wiggle + noise), symbol)

    def _minute_bar(self, symbol: str, minute: int) -> MinuteBar:
        unit = _unit
        o, c = self.level(symbol, minute), self.level(symbol, minute + 1)
        spread = abs(o) * 0.0015
        h = _price(max(o, c) + spread * unit(self.seed, symbol, minute, "h"), symbol)
        low = _price(min(o, c) - spread * unit(self.seed, symbol, minute, "l"), symbol)
        n = 1 + int(unit(self.seed, symbol, minute, "n") * 40)
        if is_crypto(symbol):
            v: float = round(n * 0.05 * (0.5 + unit(self.seed, symbol, minute, "v")), 9)
        else:
            v = n * (1 + int(unit(self.seed, symbol, minute, "v") * 200))
        vw = round(low + (h - low) * (0.25 + 0.5 * unit(self.seed, symbol, minute, "w")), 6)
        return MinuteBar(minute * MINUTE_NS, o, h, low, c, v, n, vw)

    def has_update(self, symbol: str, minute: int) -> bool:
        """Whether ``minute`` gets a late print (an ``updatedBar``) after it closed."""
        return _unit(self.seed, symbol, minute, "late") < 0.3

    def updated_bar(self, symbol: str, minute: int) -> MinuteBar:
        """The minute's bar after its late print at the close."""
        bar = self.minute_bar(symbol, minute)
        extra: float = (
            round(0.01 + _unit(self.seed, symbol, minute, "lv") * 0.1, 9)
            if is_crypto(symbol)
            else 1 + int(_unit(self.seed, symbol, minute, "lv") * 100)
        )
        v = bar.v + extra
        vw = round((bar.vw * bar.v + bar.c * extra) / v, 6)
        return replace(bar, v=round(v, 9) if is_crypto(symbol) else v, n=bar.n + 1, vw=vw)

    def bar_as_of(self, symbol: str, minute: int, now_ns: int) -> MinuteBar | None:
        """The bar of ``minute`` as the market has published it by ``now_ns``: None while
        the minute is open or in the future, the updated bar once it was streamed."""
        start = minute * MINUTE_NS
        if start + MINUTE_NS > now_ns:
            return None
        if self.has_update(symbol, minute) and start + UPDATE_DELAY_NS <= now_ns:
            return self.updated_bar(symbol, minute)
        return self.minute_bar(symbol, minute)

    def trade_price(self, symbol: str, now_ns: int, draw: float) -> float:
        """A price inside the current minute's range, ``draw`` in [0, 1) picking where."""
        bar = self.minute_bar(symbol, now_ns // MINUTE_NS)
        return _price(bar.low + (bar.h - bar.low) * draw, symbol)


def _price(value: float, symbol: str) -> float:
    """Cents for stocks and options; crypto keeps more digits by magnitude."""
    if not is_crypto(symbol):
        return max(round(value, 2), 0.01)
    digits = 2 if value >= 1000 else 4 if value >= 1 else 6
    return round(value, digits)


def daily_bar(model: BarModel, symbol: str, day_start_ns: int, now_ns: int) -> MinuteBar | None:
    """The day's bar so far: every completed minute since ``day_start_ns`` aggregated."""
    first, last = day_start_ns // MINUTE_NS, now_ns // MINUTE_NS
    bars = [model.bar_as_of(symbol, m, now_ns) for m in range(first, last)]
    done = [b for b in bars if b is not None]
    if not done:
        return None
    volume = sum(b.v for b in done)
    vwap = sum(b.vw * b.v for b in done) / volume if volume else done[-1].c
    return MinuteBar(
        day_start_ns,
        done[0].o,
        max(b.h for b in done),
        min(b.low for b in done),
        done[-1].c,
        round(volume, 9) if is_crypto(symbol) else volume,
        sum(b.n for b in done),
        round(vwap, 6),
    )
