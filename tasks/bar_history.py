"""Minute bars of a price batch into ``P:bars:{SYMBOL}``: a pure selection and one script call.

The history keeps one member per bar start; for the same minute the bar received last wins.
Each minute's held receive time lives in a companion hash (``P:meta:bars:{SYMBOL}``, field =
minute ms, value = received ns), so the script never parses it out of a member's JSON. A write
also trims the histories it touches, :data:`TRIM_LIMIT` members at most in all, so that no call
holds Redis for long after ``BAR_HISTORY_DAYS`` is lowered under a long history; the active
producer trims every history, idle ones too, in bounded steps (``producers/backfill.py``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, Final, NamedTuple

import redis

from alpaca_broker.keys import Keys
from tasks.price_events import PriceEvent
from tasks.scripts import register, script_source

BAR_TYPES: Final = frozenset({"bar", "updated_bar"})
_DAY_MS: Final = 86_400_000
_BARS: Final = script_source("bars.lua")
TRIM_LIMIT: Final = 200
"""Members (older than the cutoff) one write trims at most from the histories it touches."""


class BarUpdate(NamedTuple):
    """One bar for the history: its symbol, start in epoch ms, receive time (ns) and JSON."""

    symbol: str
    minute_ms: int
    received_ns: int
    json: bytes


def bar_updates(events: Iterable[PriceEvent]) -> list[BarUpdate]:
    """The last-received bar per (symbol, minute) among ``events``; later in the batch wins ties."""
    chosen: dict[tuple[str, int], BarUpdate] = {}
    for event in events:
        if event.type not in BAR_TYPES:
            continue
        update = BarUpdate(event.symbol, event.ts_ns // 1_000_000, event.received_at_ns, event.json)
        key = (update.symbol, update.minute_ms)
        held = chosen.get(key)
        if held is None or update.received_ns >= held.received_ns:
            chosen[key] = update
    return list(chosen.values())


def cutoff_ms(now_ms: int, history_days: float) -> int:
    """The oldest bar start kept ``history_days`` before ``now_ms`` (never negative)."""
    return max(0, now_ms - int(history_days * _DAY_MS))


def script_arguments(
    keys: Keys, updates: Iterable[BarUpdate], cutoff: int
) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of ``bars.lua`` for ``updates``."""
    script_keys: list[str] = []
    args: list[Any] = [cutoff, TRIM_LIMIT]
    for update in updates:
        script_keys += (keys.bars(update.symbol), keys.bars_meta(update.symbol))
        args += (update.minute_ms, update.received_ns, update.json)
    return script_keys, args


class BarHistory:
    """Adds a batch's bars to the histories through a script registered with redis-py."""

    def __init__(self, client: redis.Redis, keys: Keys, *, history_days: float) -> None:
        self._keys = keys
        self._history_days = history_days
        self._script = register(client, _BARS)

    def add(self, events: Iterable[PriceEvent], *, now_ms: int | None = None) -> int:
        """Add the bars among ``events``; returns how many members were added or replaced.

        Idempotent: a retried batch changes nothing. Redis errors propagate.
        """
        updates = bar_updates(events)
        if not updates:
            return 0
        now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        script_keys, args = script_arguments(
            self._keys, updates, cutoff_ms(now, self._history_days)
        )
        return int(self._script(keys=script_keys, args=args))
