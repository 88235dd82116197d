"""Bar backfill: after every (re)connect of a bar stream, fetch the minutes it missed.

Alpaca replays nothing after a gap. The stream's ``on_connected`` records the connect time
and wakes :class:`Backfiller`, a unit in its own thread (the read loop never waits), which
asks the historical API for each bar-subscribed symbol's minutes between the newest bar
held (exclusive) and the last minute complete at the connect (inclusive) -- the minutes
after it arrive on the socket -- or the last ``BAR_BACKFILL_MINUTES`` when the symbol has no
history. Each REST bar goes into the price buffer as a stream-shaped bar with source
``backfill``: the workers publish, store and compare-and-set it like a streamed one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis

from alpaca_broker.keys import Keys
from alpaca_broker.redis_client import connect
from alpaca_broker.settings import Settings
from alpaca_broker.timestamps import parse_rfc3339
from producers.buffer import EventBuffer, Message
from producers.supervisor import Backoff, ProducerUnit

log = logging.getLogger(__name__)

MINUTE_NS = 60_000_000_000
Window = tuple[int, int]
"""Bar starts in ns, both inclusive."""


def gap_window(connected_ns: int, newest_ns: int | None, fresh_minutes: int) -> Window | None:
    """The bar starts a connect at ``connected_ns`` missed, or None when there are none.

    The last is the last minute complete at the connect; the first follows ``newest_ns``
    (the newest bar held), or lies ``fresh_minutes`` back when nothing is held.
    """
    last = (connected_ns // MINUTE_NS) * MINUTE_NS - MINUTE_NS
    if newest_ns is None:
        if fresh_minutes <= 0:
            return None
        return last - (fresh_minutes - 1) * MINUTE_NS, last
    first = (newest_ns // MINUTE_NS) * MINUTE_NS + MINUTE_NS
    return (first, last) if first <= last else None


def group_windows(windows: Mapping[str, Window | None]) -> dict[Window, list[str]]:
    """Symbols sharing a window, so that each window is one request (pure)."""
    groups: dict[Window, list[str]] = {}
    for symbol, window in windows.items():
        if window is not None and window[0] <= window[1]:
            groups.setdefault(window, []).append(symbol)
    return groups


def stream_bar(symbol: str, bar: Mapping[str, Any]) -> dict[str, Any]:
    """A REST bar as the stream would have sent it (``t`` as int ns); ValueError if malformed."""
    raw: dict[str, Any] = {"T": "b", "S": symbol, "t": parse_rfc3339(str(bar["t"]))}
    for key in ("o", "h", "l", "c", "v", "n", "vw"):
        raw[key] = bar.get(key)
    return raw


@dataclass(frozen=True)
class BarSource:
    """Where a stream kind's missed minute bars come from (its client module supplies one)."""

    make_client: Callable[[Settings], Any]
    """alpaca-py's historical client for the kind, ``raw_data=True``, at ALPACA_DATA_API_URL."""
    fetch: Callable[[Any, Settings, list[str], datetime, datetime], Any]
    """One request for ``symbols``' minute bars from start to end (alpaca-py pages itself):
    ``{"SYMBOL": [{"t", "o", "h", "l", "c", "v", "n", "vw"}, ...]}``."""
    symbols: Callable[[Settings], list[str]]
    """The symbols subscribed to bars (``*`` for all)."""
    owns: Callable[[str], bool]
    """Whether a symbol is of this kind: with ``*``, the held histories (``P:bars:*``) of
    every stream are found, and only this kind's may be asked of its endpoint."""


def is_crypto_pair(symbol: str) -> bool:
    """A crypto pair (``BTC/USD``): the only symbols with a ``/`` (pure)."""
    return "/" in symbol


def is_stock_symbol(symbol: str) -> bool:
    """A stock symbol: no ``/``. Options have no bar channel, so no history to tell apart."""
    return "/" not in symbol


def _rfc3339(ns: int) -> datetime:
    return datetime.fromtimestamp(ns // 1_000_000_000, UTC)


@dataclass
class BackfillStats:
    """What the health key shows of backfills; kept across restarts of the unit."""

    runs: int = 0
    bars: int = 0
    failures: int = 0
    last_success_at: float | None = None
    last_error: str | None = None

    def snapshot(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class BackfillState:
    """What outlives a Backfiller: the wake-up, the pending connect, counters, and the newest
    bar handed off per symbol (not yet in Redis, perhaps, when the next gap comes)."""

    clock: Callable[[], int]
    wake: threading.Event = field(default_factory=threading.Event)
    connected_ns: int | None = None
    handed_off: dict[str, int] = field(default_factory=dict)
    stats: BackfillStats = field(default_factory=BackfillStats)

    def trigger(self) -> None:
        """The stream (re)connected: backfill up to now. Never blocks (runs on the loop)."""
        self.connected_ns = self.clock()
        self.wake.set()


@dataclass(eq=False)
class Backfiller(ProducerUnit):
    """Fetches the bars a gap hid and hands them to the stream's buffer; retries with backoff."""

    name: str
    source: BarSource
    settings: Settings
    buffer: EventBuffer[Message]
    state: BackfillState
    _stop: threading.Event = field(default_factory=threading.Event, init=False)
    _backoff: Backoff = field(default_factory=lambda: Backoff(1.0, 30.0), init=False)

    @property
    def _keys(self) -> Keys:
        return Keys(self.settings.redis_key_prefix)

    def run(self) -> None:
        rest = self.source.make_client(self.settings)
        store = connect(self.settings, decode_responses=True)
        stats = self.state.stats
        failures = 0
        try:
            while not self._stop.is_set():
                self.state.wake.wait(1.0)
                connected = self.state.connected_ns
                if self._stop.is_set() or not self.state.wake.is_set() or connected is None:
                    continue
                self.state.wake.clear()
                try:
                    stats.bars += self.backfill_once(rest, store, connected)
                    stats.runs += 1
                    stats.last_success_at = time.time()
                    stats.last_error = None
                    failures = 0
                except Exception as exc:
                    delay = self._backoff.delay(failures)
                    failures += 1
                    stats.failures += 1
                    stats.last_error = f"{type(exc).__name__}: {exc}"
                    log.warning("bar backfill failed (%s); retrying in %.1fs", exc, delay)
                    if self._stop.wait(delay):
                        break
                    self.state.wake.set()
        finally:
            store.close()

    def backfill_once(self, rest: Any, store: redis.Redis, connected_ns: int) -> int:
        """Fetch and hand off every symbol's gap before ``connected_ns``; returns the bars."""
        symbols = self._symbols(store)
        windows = {
            symbol: gap_window(
                connected_ns, self._newest(store, symbol, connected_ns), self._fresh_minutes
            )
            for symbol in symbols
        }
        total = 0
        for (first, last), group in group_windows(windows).items():
            answer = self.source.fetch(rest, self.settings, group, _rfc3339(first), _rfc3339(last))
            total += self._hand_off(answer if isinstance(answer, Mapping) else {}, first, last)
        if total:
            log.info("backfilled %d bar(s) for %d symbol(s)", total, len(symbols))
        return total

    @property
    def _fresh_minutes(self) -> int:
        return self.settings.bar_backfill_minutes

    def _hand_off(self, answer: Mapping[str, Any], first: int, last: int) -> int:
        count = 0
        for symbol, bars in answer.items():
            for bar in bars if isinstance(bars, list) else []:
                try:
                    raw = stream_bar(symbol, bar)
                except (KeyError, TypeError, ValueError) as exc:
                    log.warning("skipped a malformed REST bar of %s (%s)", symbol, exc)
                    continue
                if not first <= raw["t"] <= last:
                    continue
                self.buffer.put(Message(time.time_ns(), raw, "backfill"))
                handed = self.state.handed_off
                handed[symbol] = max(handed.get(symbol, raw["t"]), raw["t"])
                count += 1
        return count

    def _symbols(self, store: redis.Redis) -> list[str]:
        """The bar-subscribed symbols; with ``*``, those of this kind that already have history."""
        subscribed = self.source.symbols(self.settings)
        if "*" not in subscribed:
            return list(dict.fromkeys(subscribed))
        names = store.scan_iter(match=self._keys.bars_pattern, count=1000)
        return [s for s in held_symbols(self._keys, names) if self.source.owns(s)]

    def _newest(self, store: redis.Redis, symbol: str, connected_ns: int) -> int | None:
        """The newest bar start (ns) held or handed off before the connect's last minute."""
        end_ms = ((connected_ns // MINUTE_NS) * MINUTE_NS - MINUTE_NS) // 1_000_000
        held = store.zrevrangebyscore(self._keys.bars(symbol), end_ms, "-inf", 0, 1, True)
        newest = int(held[0][1]) * 1_000_000 if held else None
        handed = self.state.handed_off.get(symbol)
        if handed is not None and handed <= end_ms * 1_000_000:
            newest = handed if newest is None else max(newest, handed)
        return newest

    def stop(self) -> None:
        self._stop.set()
        self.state.wake.set()

    def snapshot(self) -> dict[str, Any]:
        return self.state.stats.snapshot()


def held_symbols(keys: Keys, names: Iterable[str]) -> list[str]:
    """The symbols of bar-history key ``names``, sorted (pure).

    A name whose rest holds a ``:`` is no history (no Alpaca symbol has one): an older
    release's ``P:bars:meta:{SYMBOL}`` hash left in Redis is skipped.
    """
    prefix = keys.bars("")
    return sorted(
        {n[len(prefix) :] for n in names if n.startswith(prefix) and ":" not in n[len(prefix) :]}
    )
