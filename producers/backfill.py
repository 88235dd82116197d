"""Bar backfill: every minute a gap hid is fetched, however long the historical API fails.

Alpaca replays nothing after a gap. The stream's ``on_connected`` notes the connect time
(:meth:`BackfillState.trigger`, never blocking the read loop) and wakes :class:`Backfiller`,
a unit in its own thread, which first turns each noted connect into the windows it missed,
per bar-subscribed symbol: from the minute after the newest bar held (or handed off) before
the connect, or ``BAR_BACKFILL_MINUTES`` back when the symbol has no history, to the last
minute complete at the connect, clipped to ``BAR_HISTORY_DAYS``. Those windows go into the
stream's **gap ledger** (``P:meta:gaps:{STREAM}``, :class:`GapLedger`) in Redis at once,
merged with what it holds, before any REST call: a gap older than a later reconnect stays
there, behind the bars streamed since, and a standby taking over the lease finishes what the
ledger holds. A window leaves the ledger only once its bars were handed to the broker (the
send returned), chunk by chunk; a failure leaves it there and the pass is retried with
backoff.

Every REST request is bounded (:class:`PageGuard`): a 30 s timeout, pages fetched and handed
off one at a time (nothing accumulates), a page token seen before or more pages than the
window can hold end the fetch as a failure, logged once per spell with its context and
counted in the health key.

Backfilled bars travel their own path: this unit sends them itself, as ``backfill``-sourced
bars in price tasks of :data:`TASK_BARS`, through a sender of its own, never through the live
buffer (whose drop-oldest policy is for live prices), and only while the ``prices`` queue is
empty (:data:`MAX_QUEUED_TASKS`), so a live batch waits behind at most one backfill task.
:class:`HistoryTrimmer` trims every history of the stream's kind (idle ones included) in
bounded steps.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

import msgspec
import redis
import requests
from requests.adapters import HTTPAdapter

from alpaca_broker.errors import RetryableError
from alpaca_broker.health import broker_clients
from alpaca_broker.keys import PRICES_QUEUE, Keys
from alpaca_broker.redis_client import connect
from alpaca_broker.settings import Settings
from alpaca_broker.timestamps import parse_rfc3339
from producers.buffer import Message
from producers.supervisor import Backoff, ProducerUnit

log = logging.getLogger(__name__)

MINUTE_MS = 60_000
DAY_MS = 86_400_000
Window = tuple[int, int]
"""Bar starts in epoch ms, both inclusive."""

REQUEST_TIMEOUT = 30.0
"""Seconds a historical request may go unanswered (connect, and between bytes) before it
counts as a failure."""
PAGE_LIMIT = 10_000
"""Bars asked per page (Alpaca's maximum): a window of N bars takes at most N / 10,000 + 1
pages, and one page is all the unit holds at a time."""
CHUNK_BARS = 50_000
"""Bars per fetch at most: the ledger records progress after each (a window of 40 symbols x 7
days is 9 fetches), so a failure refetches one chunk, not the window."""
SYMBOLS_PER_REQUEST = 100
"""Symbols per request at most (the URL stays short)."""
TASK_BARS = 100
"""Backfilled bars per price task: what a live batch may wait behind in a worker."""
MAX_QUEUED_TASKS = 0
"""A backfill task is sent only while the ``prices`` queue holds at most this many tasks (none:
the workers took everything), so a live batch never queues behind backfill tasks: it waits at
most for the one a worker is running. Under a heavy live load the backfill slows down."""
PACE_POLL = 0.002
"""Seconds between looks at the queue while it is longer."""
LEDGER_CHECK_EVERY = 60.0
"""Seconds between looks at the ledger with nothing noted (entries another holder left)."""
LOG_EVERY = 300.0
"""Seconds between log lines while the backfill keeps failing (the first one always)."""
TRIM_INTERVAL = 60.0
"""Seconds between two sweeps of :class:`HistoryTrimmer`."""
TRIM_KEYS = 100
"""Histories per trim script call."""
TRIM_BUDGET = 500
"""Members one trim script call removes at most (about a millisecond of Redis)."""


class Gap(NamedTuple):
    """One open gap of one symbol: bar starts ``first`` to ``last`` (epoch ms, inclusive),
    recorded at ``opened`` (epoch ms, wall clock)."""

    first: int
    last: int
    opened: int


# --- the pure parts: windows, merging, clipping ------------------------------------------


def minute_floor(ms: int) -> int:
    """The start of the minute holding ``ms``."""
    return ms // MINUTE_MS * MINUTE_MS


def history_start(now_ms: int, history_days: float) -> int:
    """The first bar start ``BAR_HISTORY_DAYS`` keeps at ``now_ms``: the first whole minute at
    or after the cutoff (the workers trim bar starts before ``now - days``)."""
    cutoff = now_ms - int(history_days * DAY_MS)
    return -(-cutoff // MINUTE_MS) * MINUTE_MS


def gap_window(
    connected_ms: int, newest_ms: int | None, fresh_minutes: int, oldest_ms: int
) -> Window | None:
    """The bar starts a connect at ``connected_ms`` missed, or None when there are none.

    The last is the last minute complete at the connect; the first follows ``newest_ms`` (the
    newest bar held before it), or lies ``fresh_minutes`` back when nothing is held; never
    before ``oldest_ms`` (:func:`history_start`).
    """
    last = minute_floor(connected_ms) - MINUTE_MS
    if newest_ms is None:
        if fresh_minutes <= 0:
            return None
        first = last - (fresh_minutes - 1) * MINUTE_MS
    else:
        first = minute_floor(newest_ms) + MINUTE_MS
    first = max(first, oldest_ms)
    return (first, last) if first <= last else None


def merge(gaps: Iterable[Gap]) -> list[Gap]:
    """``gaps`` sorted, overlapping or adjacent ones merged (each keeps the earliest
    ``opened``)."""
    merged: list[Gap] = []
    for gap in sorted(gaps):
        if merged and gap.first <= merged[-1].last + MINUTE_MS:
            held = merged[-1]
            merged[-1] = Gap(held.first, max(held.last, gap.last), min(held.opened, gap.opened))
        else:
            merged.append(gap)
    return merged


def subtract(gaps: Iterable[Gap], done: Window) -> list[Gap]:
    """``gaps`` less the minutes of ``done`` (a gap cut in two keeps its ``opened``)."""
    first, last = done
    left: list[Gap] = []
    for gap in gaps:
        if gap.last < first or gap.first > last:
            left.append(gap)
            continue
        if gap.first < first:
            left.append(Gap(gap.first, first - MINUTE_MS, gap.opened))
        if gap.last > last:
            left.append(Gap(last + MINUTE_MS, gap.last, gap.opened))
    return left


def clip(gaps: Iterable[Gap], oldest_ms: int) -> list[Gap]:
    """``gaps`` without the minutes before ``oldest_ms`` (``BAR_HISTORY_DAYS`` no longer keeps
    them)."""
    return [
        Gap(max(gap.first, oldest_ms), gap.last, gap.opened)
        for gap in gaps
        if gap.last >= oldest_ms
    ]


def group_windows(ledger: Mapping[str, Sequence[Gap]]) -> dict[Window, list[str]]:
    """Symbols sharing a window, so that each window is one request, oldest window first."""
    groups: dict[Window, list[str]] = {}
    for symbol, gaps in ledger.items():
        for gap in gaps:
            groups.setdefault((gap.first, gap.last), []).append(symbol)
    return dict(sorted(groups.items()))


def chunks(window: Window, symbols: int, bars: int = CHUNK_BARS) -> list[Window]:
    """``window`` cut, oldest first, into spans of at most ``bars`` bars for ``symbols``."""
    span = max(1, bars // max(1, symbols)) * MINUTE_MS
    first, last = window
    return [(start, min(last, start + span - MINUTE_MS)) for start in range(first, last + 1, span)]


def page_bound(symbols: int, window: Window) -> int:
    """The most pages a window can take: what it can hold (a bar per symbol and minute) in
    pages of :data:`PAGE_LIMIT`, plus the last."""
    capacity = symbols * ((window[1] - window[0]) // MINUTE_MS + 1)
    return -(-capacity // PAGE_LIMIT) + 1


def summary(ledger: Mapping[str, Sequence[Gap]]) -> dict[str, Any]:
    """What the health key shows of the ledger: open gaps (one per symbol and window), the
    symbols they hold, when the oldest open one was recorded (epoch s) and its first minute."""
    gaps = [gap for held in ledger.values() for gap in held]
    if not gaps:
        return {"open": 0, "symbols": 0, "oldest_opened_at": None, "oldest_from": None}
    return {
        "open": len(gaps),
        "symbols": sum(1 for held in ledger.values() if held),
        "oldest_opened_at": min(gap.opened for gap in gaps) / 1000,
        "oldest_from": _rfc3339(min(gap.first for gap in gaps)),
    }


def stream_bar(symbol: str, bar: Mapping[str, Any]) -> dict[str, Any]:
    """A REST bar as the stream would have sent it (``t`` as int ns); ValueError if malformed."""
    raw: dict[str, Any] = {"T": "b", "S": symbol, "t": parse_rfc3339(str(bar["t"]))}
    for key in ("o", "h", "l", "c", "v", "n", "vw"):
        raw[key] = bar.get(key)
    return raw


def _rfc3339(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms // 1000, UTC)


# --- the ledger ------------------------------------------------------------------------


def _encode(gaps: Sequence[Gap]) -> str:
    return json.dumps([list(gap) for gap in gaps], separators=(",", ":"))


def _decode(raw: str | None) -> list[Gap]:
    if not raw:
        return []
    try:
        return [Gap(int(a), int(b), int(c)) for a, b, c in json.loads(raw)]
    except (TypeError, ValueError) as exc:  # written by hand, or by a future release
        log.warning("ignored an unreadable gap ledger entry %r (%s)", raw[:80], exc)
        return []


class GapLedger:
    """A stream's open gaps in Redis (``P:meta:gaps:{STREAM}``): a hash, field = symbol, value =
    JSON ``[[first, last, opened], ...]`` (:class:`Gap`), merged and sorted. Each change is a
    WATCH transaction, so a deposed holder finishing its last chunk cannot undo another's."""

    def __init__(self, client: redis.Redis, key: str) -> None:
        self._client = client
        self.key = key

    def load(self) -> dict[str, list[Gap]]:
        """Every open gap, by symbol."""
        held = self._client.hgetall(self.key)
        return {symbol: gaps for symbol, raw in held.items() if (gaps := _decode(raw))}

    def add(self, windows: Mapping[str, Window], opened_ms: int) -> dict[str, list[Gap]]:
        """Record ``windows`` (merged with what is held); returns those symbols' gaps now."""
        opened = {s: Gap(w[0], w[1], opened_ms) for s, w in windows.items()}
        return self._update(list(windows), lambda s, held: merge([*held, opened[s]]))

    def remove(self, symbols: Sequence[str], done: Window) -> dict[str, list[Gap]]:
        """``done``'s minutes are handed off for ``symbols``; returns their gaps now."""
        return self._update(symbols, lambda s, held: subtract(held, done))

    def clip(self, oldest_ms: int) -> dict[str, list[Gap]]:
        """Drop the minutes before ``oldest_ms``; returns every open gap."""
        changed: dict[str, list[Gap]] = {}
        ledger = self.load()
        for symbol, gaps in ledger.items():
            kept = clip(gaps, oldest_ms)
            if kept != gaps:
                changed[symbol] = kept
        if changed:
            ledger.update(self._update(list(changed), lambda s, held: clip(held, oldest_ms)))
        return {symbol: gaps for symbol, gaps in ledger.items() if gaps}

    def _update(
        self, symbols: Sequence[str], change: Callable[[str, list[Gap]], list[Gap]]
    ) -> dict[str, list[Gap]]:
        symbols = list(dict.fromkeys(symbols))
        result: dict[str, list[Gap]] = {}
        if not symbols:
            return result

        def update(pipe: Any) -> None:
            held = pipe.hmget(self.key, symbols)
            result.clear()
            for symbol, raw in zip(symbols, held, strict=True):
                result[symbol] = change(symbol, _decode(raw))
            keep = {s: _encode(gaps) for s, gaps in result.items() if gaps}
            drop = [s for s, gaps in result.items() if not gaps]
            pipe.multi()
            if keep:
                pipe.hset(self.key, mapping=keep)
            if drop:
                pipe.hdel(self.key, *drop)

        self._client.transaction(update, self.key)
        return dict(result)


# --- bounded REST calls ----------------------------------------------------------------


class PagingError(RetryableError):
    """The historical API's paging cannot finish: a page token seen before, or more pages than
    the window can hold. The fetch fails; its gap stays and is tried again later."""


class BackfillFailure(RetryableError):
    """A fetch failed; the message says which symbols, minutes and page, and why."""


class _Stopped(Exception):
    """The unit was asked to stop in the middle of a fetch."""


class FastJsonResponse(requests.Response):
    """A response whose JSON msgspec decodes: a page of 10,000 bars (1.2 MB) holds the
    interpreter lock about 8 ms instead of the standard library's 24 ms, time in which the
    stream's read loop and hand-off cannot run."""

    def json(self, **kwargs: Any) -> Any:
        return msgspec.json.decode(self.content)


class TimeoutAdapter(HTTPAdapter):
    """A requests adapter that gives every request ``timeout`` seconds unless it names its
    own (alpaca-py's clients set none, and a server that never answers would hold the
    backfill forever), and answers :class:`FastJsonResponse`."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self.timeout = timeout

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: bool | str = True,
        cert: Any = None,
        proxies: dict[str, str] | None = None,
    ) -> requests.Response:
        response = super().send(
            request,
            stream=stream,
            timeout=self.timeout if timeout is None else timeout,
            verify=verify,
            cert=cert,
            proxies=proxies,
        )
        response.__class__ = FastJsonResponse
        return response


class PageGuard:
    """alpaca-py's historical client, a page at a time.

    Its session gets a :class:`TimeoutAdapter`; its ``get`` (which its paging loop calls once
    a page) is wrapped: between :meth:`begin` and :meth:`end` each page asks for
    :data:`PAGE_LIMIT` bars, goes to the sink at once, and is returned to alpaca-py emptied
    (only its ``next_page_token``), so nothing accumulates; a page token seen before, or a
    page past the bound, raises :class:`PagingError` before the request is made.
    """

    def __init__(self, client: Any, timeout: float) -> None:
        session = getattr(client, "_session", None)
        if not isinstance(session, requests.Session):
            raise TypeError(f"{type(client).__name__} has no requests session to bound")
        adapter = TimeoutAdapter(timeout)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        self.client = client
        self._get = client.get
        client.get = self._page
        self._sink: Callable[[Any], None] | None = None
        self._seen: set[str] = set()
        self._max_pages = 0
        self.pages = 0

    def begin(self, max_pages: int, sink: Callable[[Any], None]) -> None:
        """Start a fetch of at most ``max_pages`` pages, each page's ``bars`` to ``sink``."""
        self._sink, self._max_pages, self.pages = sink, max_pages, 0
        self._seen.clear()

    def end(self) -> None:
        self._sink = None
        self._seen.clear()

    def _page(self, path: str, data: Any = None, **kwargs: Any) -> Any:
        sink = self._sink
        if sink is None:  # a request outside a fetch: alpaca-py's own
            return self._get(path, data, **kwargs)
        params = dict(data or {})
        params["limit"] = PAGE_LIMIT
        token = params.get("page_token")
        if self.pages >= self._max_pages:
            raise PagingError(f"more than {self._max_pages} page(s) for the window")
        self.pages += 1
        answer = self._get(path, params, **kwargs)
        if not isinstance(answer, Mapping):
            raise PagingError(f"a page that is not a JSON object ({type(answer).__name__})")
        if token:
            self._seen.add(str(token))
        following = answer.get("next_page_token")
        if following is not None and str(following) in self._seen:
            raise PagingError(f"page token {str(following)[:40]!r} seen before")
        bars = answer.get("bars")
        if isinstance(bars, list) and isinstance(answer.get("symbol"), str):
            bars = {answer["symbol"]: bars}  # a single-symbol endpoint
        sink(bars if isinstance(bars, Mapping) else {})
        return {"bars": {}, "next_page_token": following}


# --- the unit ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BarSource:
    """Where a stream kind's missed minute bars come from (its client module supplies one)."""

    make_client: Callable[[Settings], Any]
    """alpaca-py's historical client for the kind, ``raw_data=True``, at ALPACA_DATA_API_URL."""
    fetch: Callable[[Any, Settings, list[str], datetime, datetime], Any]
    """One request for ``symbols``' minute bars from start to end (alpaca-py's client pages,
    through :class:`PageGuard`): ``{"SYMBOL": [{"t", "o", "h", "l", "c", "v", "n", "vw"}]}``."""
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


@dataclass
class BackfillStats:
    """What the health key shows of backfills; kept across restarts of the unit."""

    runs: int = 0
    bars: int = 0
    failures: int = 0
    trimmed: int = 0
    last_success_at: float | None = None
    last_error: str | None = None

    def snapshot(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class BackfillState:
    """What outlives a Backfiller: the wake-up, the connects not yet in the ledger, counters,
    the ledger's last summary, and the newest bar handed off per symbol (epoch ms; not yet in
    Redis, perhaps, when the next gap comes)."""

    clock: Callable[[], int]
    """The market clock (ns)."""
    wake: threading.Event = field(default_factory=threading.Event)
    pending: deque[int] = field(default_factory=deque)
    handed_off: dict[str, int] = field(default_factory=dict)
    stats: BackfillStats = field(default_factory=BackfillStats)
    gaps: dict[str, Any] = field(default_factory=lambda: summary({}))

    def trigger(self) -> None:
        """The stream (re)connected: note when, for the ledger. Never blocks (runs on the
        loop); every connect is kept, none overwrites another."""
        self.pending.append(self.clock())
        self.wake.set()

    def snapshot(self) -> dict[str, Any]:
        return {**self.stats.snapshot(), "gaps": self.gaps}


Send = Callable[[list[Message]], None]


class Backfiller(ProducerUnit):
    """Records the gaps of ``stream`` in its ledger and fills them: fetches their bars and
    sends them through ``send`` (a sender of its own: never the live buffer), paced by the
    ``prices`` queue; retries a failed pass with backoff, the gaps kept meanwhile."""

    def __init__(
        self,
        name: str,
        stream: str,
        source: BarSource,
        settings: Settings,
        send: Send,
        state: BackfillState,
    ) -> None:
        self.name = name
        self.stream = stream
        self.source = source
        self.settings = settings
        self.send = send
        self.state = state
        self._keys = Keys(settings.redis_key_prefix)
        self._stop = threading.Event()
        self._backoff = Backoff(1.0, 30.0)
        self._logged_at = 0.0
        self._open: dict[str, list[Gap]] = {}

    def run(self) -> None:
        # Read at run time, so that a test may shorten it (the contract's 30 s otherwise).
        pages = PageGuard(self.source.make_client(self.settings), REQUEST_TIMEOUT)
        store = connect(
            self.settings, decode_responses=True, socket_timeout=10, socket_connect_timeout=5
        )
        queue = broker_clients(self.settings, store)[PRICES_QUEUE]
        self._store, self._queue = store, queue
        self._ledger = GapLedger(store, self._keys.bar_gaps(self.stream))
        failures = 0
        retry_at: float | None = None
        check_at = 0.0  # a first pass at once: the ledger may hold an earlier holder's gaps
        noted = False
        try:
            while not self._stop.is_set():
                noted |= self.state.wake.is_set()
                self.state.wake.clear()
                try:
                    self._record()  # at once, even while a failed pass waits out its backoff
                except _Stopped:
                    break
                except Exception as exc:  # Redis unreachable: the connects stay noted
                    failures, retry_at = self._failed(exc, failures)
                    self._stop.wait(max(0.0, retry_at - time.monotonic()))
                    continue
                now = time.monotonic()
                due = now >= retry_at if retry_at is not None else noted or now >= check_at
                if not due:
                    self.state.wake.wait(0.5 if retry_at is None else min(0.5, retry_at - now))
                    continue
                noted, check_at = False, now + LEDGER_CHECK_EVERY
                try:
                    worked = self._pass(pages)
                except _Stopped:
                    break
                except Exception as exc:  # the gaps stay in the ledger
                    failures, retry_at = self._failed(exc, failures)
                    continue
                if failures:
                    log.info("%s: backfill succeeded after %d failure(s)", self.name, failures)
                failures, retry_at = 0, None
                if worked:
                    self.state.stats.runs += 1
                    self.state.stats.last_success_at = time.time()
                    self.state.stats.last_error = None
        finally:
            if queue is not store:
                queue.close()
            store.close()

    def stop(self) -> None:
        self._stop.set()
        self.state.wake.set()

    def snapshot(self) -> dict[str, Any]:
        return self.state.snapshot()

    # --- recording gaps ---

    def _record(self) -> None:
        """Turn the connects noted so far into ledger windows (each dropped only once it is
        recorded)."""
        pending = self.state.pending
        while pending:
            connected_ms = pending[0] // 1_000_000
            windows = self._windows(connected_ms)
            if windows:
                added = self._ledger.add(windows, time.time_ns() // 1_000_000)
                self._open.update(added)
                self.state.gaps = summary(self._open)
                log.info(
                    "%s: %d symbol(s) missed bars up to %s; recorded in the gap ledger",
                    self.name,
                    len(windows),
                    _rfc3339(minute_floor(connected_ms) - MINUTE_MS),
                )
            pending.popleft()

    def _windows(self, connected_ms: int) -> dict[str, Window]:
        """Each bar-subscribed symbol's window missed by a connect at ``connected_ms``."""
        symbols = self._symbols()
        end_ms = minute_floor(connected_ms) - MINUTE_MS
        pipe = self._store.pipeline(transaction=False)
        for symbol in symbols:
            pipe.zrevrangebyscore(self._keys.bars(symbol), end_ms, "-inf", 0, 1, True)
        held = pipe.execute() if symbols else []
        oldest = history_start(connected_ms, self.settings.bar_history_days)
        fresh = self.settings.bar_backfill_minutes
        windows: dict[str, Window] = {}
        for symbol, newest_held in zip(symbols, held, strict=True):
            newest = int(newest_held[0][1]) if newest_held else None
            handed = self.state.handed_off.get(symbol)
            if handed is not None and handed <= end_ms:
                newest = handed if newest is None else max(newest, handed)
            window = gap_window(connected_ms, newest, fresh, oldest)
            if window is not None:
                windows[symbol] = window
        return windows

    def _symbols(self) -> list[str]:
        """The bar-subscribed symbols; with ``*``, those of this kind that already have history."""
        subscribed = self.source.symbols(self.settings)
        if "*" not in subscribed:
            return list(dict.fromkeys(subscribed))
        names = self._store.scan_iter(match=self._keys.bars_pattern, count=1000)
        return [s for s in held_symbols(self._keys, names) if self.source.owns(s)]

    # --- filling gaps ---

    def _pass(self, pages: PageGuard) -> bool:
        """Fill every gap of the ledger, oldest window first; True when there was one.
        Raises the first failure (the rest stays in the ledger)."""
        now_ms = self.settings.market_now_ns() // 1_000_000
        self._open = self._ledger.clip(history_start(now_ms, self.settings.bar_history_days))
        self.state.gaps = summary(self._open)
        if not self._open:
            return False
        total = 0
        for window, symbols in group_windows(self._open).items():
            for at in range(0, len(symbols), SYMBOLS_PER_REQUEST):
                batch = symbols[at : at + SYMBOLS_PER_REQUEST]
                for chunk in chunks(window, len(batch)):
                    total += self._fetch(pages, batch, chunk)
                    self._open.update(self._ledger.remove(batch, chunk))
                    self._open = {s: gaps for s, gaps in self._open.items() if gaps}
                    self.state.gaps = summary(self._open)
        log.info("%s: backfilled %d bar(s); %d gap(s) open", self.name, total, len(self._open))
        return True

    def _fetch(self, pages: PageGuard, symbols: list[str], chunk: Window) -> int:
        """Fetch and hand off ``symbols``' bars of ``chunk``, a page at a time; returns the
        bars sent. Any failure is raised with its context."""
        sent = [0]

        def sink(bars: Any) -> None:
            sent[0] += self._hand_off(bars, set(symbols), chunk)

        pages.begin(page_bound(len(symbols), chunk), sink)
        try:
            answer = self.source.fetch(
                pages.client, self.settings, symbols, _utc(chunk[0]), _utc(chunk[1])
            )
        except _Stopped:
            raise
        except Exception as exc:
            what = f"{len(symbols)} symbol(s) ({','.join(symbols[:3])}{'...' * (len(symbols) > 3)})"
            raise BackfillFailure(
                f"{what} {_rfc3339(chunk[0])}..{_rfc3339(chunk[1])}, page {pages.pages}: "
                f"{type(exc).__name__}: {str(exc)[:300]}"
            ) from exc
        finally:
            pages.end()
        if isinstance(answer, Mapping) and any(answer.values()):  # a client that paged itself
            sink(answer)
        return sent[0]

    def _hand_off(self, bars: Mapping[str, Any], wanted: set[str], chunk: Window) -> int:
        """One page's bars, as stream-shaped ``backfill`` bars in paced tasks; returns them."""
        if self._stop.is_set():
            raise _Stopped
        received = time.time_ns()
        messages: list[Message] = []
        handed = self.state.handed_off
        skipped = 0
        for symbol, rows in bars.items():
            if symbol not in wanted or not isinstance(rows, list):
                skipped += len(rows) if isinstance(rows, list) else 1
                continue
            for row in rows:
                try:
                    raw = stream_bar(symbol, row)
                except (KeyError, TypeError, ValueError):
                    skipped += 1
                    continue
                minute = minute_floor(raw["t"] // 1_000_000)
                if not chunk[0] <= minute <= chunk[1]:
                    continue
                messages.append(Message(received, raw, "backfill"))
                handed[symbol] = max(handed.get(symbol, minute), minute)
        if skipped:
            log.warning("%s: skipped %d malformed or unrequested REST bar(s)", self.name, skipped)
        for at in range(0, len(messages), TASK_BARS):
            self._pace()
            self.send(messages[at : at + TASK_BARS])
            self.state.stats.bars += len(messages[at : at + TASK_BARS])
        return len(messages)

    def _pace(self) -> None:
        """Wait until the ``prices`` queue is about empty (the workers keep up), noting new
        connects meanwhile."""
        while self._queue.llen(PRICES_QUEUE) > MAX_QUEUED_TASKS:
            self._record()
            if self._stop.wait(PACE_POLL):
                raise _Stopped

    def _failed(self, exc: Exception, failures: int) -> tuple[int, float]:
        """Count a failure and log the first of a spell (then one every LOG_EVERY seconds);
        returns the failures in a row and when to try again (monotonic)."""
        delay = self._backoff.delay(failures)
        failures += 1
        stats = self.state.stats
        stats.failures += 1
        stats.last_error = str(exc) if isinstance(exc, BackfillFailure) else f"{exc!r}"[:300]
        now = time.monotonic()
        if failures == 1 or now - self._logged_at >= LOG_EVERY:
            self._logged_at = now
            log.warning(
                "%s: backfill failed (%s); %d gap(s) kept in the ledger, retrying in %.1fs "
                "(failure %d in a row)",
                self.name,
                stats.last_error,
                self.state.gaps.get("open", 0),
                delay,
                failures,
            )
        return failures, now + delay


# --- trimming ---------------------------------------------------------------------------

TRIM_SCRIPT = """
-- Trim bar histories: KEYS = zset, meta hash, zset, meta hash, ...; ARGV[1] = cutoff (bar
-- starts in epoch ms below it go), ARGV[2] = members to remove at most in this call.
local bound = '(' .. ARGV[1]
local budget = tonumber(ARGV[2])
local removed = 0
for i = 1, #KEYS, 2 do
  if removed >= budget then break end
  local old = redis.call('ZRANGEBYSCORE', KEYS[i], '-inf', bound, 'WITHSCORES', 'LIMIT', 0,
                         budget - removed)
  if #old > 0 then
    local members, minutes = {}, {}
    for j = 1, #old, 2 do
      members[#members + 1] = old[j]
      minutes[#minutes + 1] = old[j + 1]
    end
    redis.call('ZREM', KEYS[i], unpack(members))
    redis.call('HDEL', KEYS[i + 1], unpack(minutes))
    removed = removed + #members
  end
end
return removed
"""


class HistoryTrimmer(ProducerUnit):
    """Trims every bar history of its kind, idle ones included, to ``BAR_HISTORY_DAYS``:
    every :data:`TRIM_INTERVAL` seconds, SCAN ``P:bars:*`` and remove the older members in
    script calls of at most :data:`TRIM_BUDGET` members over :data:`TRIM_KEYS` keys (well
    under a millisecond each), so lowering ``BAR_HISTORY_DAYS`` under a long history never
    blocks Redis. The workers trim only a little at each write (``tasks/bar_history.py``)."""

    def __init__(
        self, name: str, source: BarSource, settings: Settings, state: BackfillState
    ) -> None:
        self.name = name
        self.source = source
        self.settings = settings
        self.state = state
        self._keys = Keys(settings.redis_key_prefix)
        self._stop = threading.Event()
        self._store = connect(
            settings, decode_responses=True, socket_timeout=10, socket_connect_timeout=5
        )
        self._script = self._store.register_script(TRIM_SCRIPT)

    def run(self) -> None:
        failing = False
        try:
            while not self._stop.is_set():
                try:
                    removed = self.sweep()
                except redis.RedisError as exc:
                    if not failing:
                        log.warning("%s: bar history trim failed (%s); retrying", self.name, exc)
                    failing = True
                else:
                    if removed:
                        log.info("%s: trimmed %d bar(s) older than the history", self.name, removed)
                    failing = False
                self._stop.wait(TRIM_INTERVAL)
        finally:
            self._store.close()

    def sweep(self) -> int:
        """One pass over every history of this kind; returns the members removed."""
        now_ms = self.settings.market_now_ns() // 1_000_000
        cutoff = now_ms - int(self.settings.bar_history_days * DAY_MS)
        removed = 0
        batch: list[str] = []
        names = self._store.scan_iter(match=self._keys.bars_pattern, count=1000)
        for symbol in held_symbols(self._keys, names):
            if self._stop.is_set():
                break
            if self.source.owns(symbol):
                batch.append(symbol)
            if len(batch) == TRIM_KEYS:
                removed += self._trim(batch, cutoff)
                batch = []
        if batch:
            removed += self._trim(batch, cutoff)
        return removed

    def _trim(self, symbols: list[str], cutoff: int) -> int:
        keys = [key for s in symbols for key in (self._keys.bars(s), self._keys.bars_meta(s))]
        removed = 0
        while not self._stop.is_set():
            count = int(self._script(keys=keys, args=[cutoff, TRIM_BUDGET]))
            removed += count
            self.state.stats.trimmed += count
            if count < TRIM_BUDGET:
                break
        return removed

    def stop(self) -> None:
        self._stop.set()


def held_symbols(keys: Keys, names: Iterable[str]) -> list[str]:
    """The symbols of bar-history key ``names``, sorted (pure).

    A name whose rest holds a ``:`` is no history (no Alpaca symbol has one): an older
    release's ``P:bars:meta:{SYMBOL}`` hash left in Redis is skipped.
    """
    prefix = keys.bars("")
    return sorted(
        {n[len(prefix) :] for n in names if n.startswith(prefix) and ":" not in n[len(prefix) :]}
    )
