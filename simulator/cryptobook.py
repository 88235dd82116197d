"""Synthetic crypto order books: a snapshot per symbol, then level changes around the mid."""

from __future__ import annotations

import random

from simulator import assetmsgs
from simulator.codec import Message

_LEVELS = 5


class CryptoBooks:
    """Per symbol: price -> size on each side, kept around the market's midpoint."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._bids: dict[str, dict[float, float]] = {}
        self._asks: dict[str, dict[float, float]] = {}

    def _size(self) -> float:
        return round(0.001 + self._rng.random() * 2, 6)

    def _ensure(self, symbol: str, mid: float) -> None:
        if symbol in self._bids:
            return
        step = _step(mid)
        self._bids[symbol] = {_round(mid - step * (i + 1)): self._size() for i in range(_LEVELS)}
        self._asks[symbol] = {_round(mid + step * (i + 1)): self._size() for i in range(_LEVELS)}

    def snapshot(self, symbol: str, mid: float, ts_ns: int) -> Message:
        """The full book (``r: true``): bids best first, asks best first."""
        self._ensure(symbol, mid)
        bids = sorted(self._bids[symbol].items(), reverse=True)
        asks = sorted(self._asks[symbol].items())
        return assetmsgs.orderbook(symbol, ts_ns, bids, asks, reset=True)

    def update(self, symbol: str, mid: float, ts_ns: int) -> Message:
        """Change one level: resize it, or remove it (size 0) and add one nearer the mid."""
        if symbol not in self._bids:
            return self.snapshot(symbol, mid, ts_ns)
        rng = self._rng
        buy = rng.random() < 0.5
        side = self._bids[symbol] if buy else self._asks[symbol]
        changes: list[tuple[float, float]] = []
        price = rng.choice(sorted(side))
        if rng.random() < 0.3 and len(side) > 1:
            del side[price]
            changes.append((price, 0.0))
            best = max(side) if buy else min(side)
            fresh = _round(best + _step(mid) * (1 if buy else -1) * 0.5)
            if (buy and fresh < mid) or (not buy and fresh > mid):
                side[fresh] = self._size()
                changes.append((fresh, side[fresh]))
        else:
            side[price] = self._size()
            changes.append((price, side[price]))
        bids, asks = (changes, []) if buy else ([], changes)
        return assetmsgs.orderbook(symbol, ts_ns, bids, asks, reset=False)


def _step(mid: float) -> float:
    return max(mid * 0.0002, 0.000001)


def _round(price: float) -> float:
    digits = 2 if price >= 1000 else 4 if price >= 1 else 6
    return round(price, digits)
