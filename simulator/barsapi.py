"""The historical bars REST API, answered from the same bar model the streams use.

``GET /v2/stocks/bars``, ``/v2/stocks/{symbol}/bars`` and ``/v1beta3/crypto/us/bars`` with
``symbols``, ``timeframe`` (``1Min``), ``start``, ``end``, ``limit``, ``page_token``,
``feed`` and ``sort``, as alpaca-py's historical clients call them. Only completed minutes
are answered (never the open minute or the future), each as the stream sent it: the updated
values once the ``updatedBar`` went out. A page token names where the next page starts (a
symbol and a minute), so paging through any window costs one pass over it. ``BarsDesk`` also
holds what tests inject (the next N requests answer 500 or 429; the next N pages name a page
token already served, or a fresh token leading to the same page again, as a server that
cannot finish paging does) and the log of every bars request served. A stalled answer is the
harness's ``tests/harness/rest_proxy.py`` (this desk answers on the server's event loop).
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from simulator.bars import MINUTE_NS, BarModel, is_crypto
from simulator.clock import MarketClock, parse_time, rfc3339

STOCK_BARS = "/v2/stocks/bars"
CRYPTO_BARS = "/v1beta3/crypto/us/bars"
DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000
RATE_LIMIT = 200
#: HTTP status, extra headers, JSON body.
Answer = tuple[int, dict[str, str], Any]


@dataclass(frozen=True)
class BarsRequest:
    """One bars request as served: its path and its query parameters."""

    path: str
    params: dict[str, str]
    status: int


def is_bars_path(path: str) -> bool:
    """Whether ``path`` is one of the bars endpoints."""
    if path in (STOCK_BARS, CRYPTO_BARS):
        return True
    parts = path.split("/")
    return len(parts) == 5 and parts[1:3] == ["v2", "stocks"] and parts[4] == "bars"


class BarsDesk:
    """Answers bars requests; thread-safe (tests inject faults from their own thread)."""

    def __init__(self, model: BarModel, clock: MarketClock) -> None:
        self.model = model
        self.clock = clock
        self._lock = threading.Lock()
        self._faults: list[int] = []  # statuses of the next requests, in order
        self._page_faults: list[str] = []  # "repeat" or "fresh", for the next pages served
        self._nonce = 0
        self._retry_after = 1
        self.log: list[BarsRequest] = []

    def fail_next(self, count: int, status: int = 500, retry_after: int = 1) -> None:
        """Answer the next ``count`` bars requests with ``status`` (500, 429 with rate-limit
        headers, ...)."""
        if not 400 <= status <= 599 or count < 0:
            raise ValueError("status must be an HTTP error status and count >= 0")
        with self._lock:
            self._faults += [status] * count
            self._retry_after = retry_after

    def repeat_page_token(self, count: int = 1) -> None:
        """The next ``count`` pages answered name, as their ``next_page_token``, the token
        they were asked with (a first page: a token leading to itself), so a client that
        follows tokens asks for the same page forever."""
        self._add_page_faults("repeat", count)

    def endless_pages(self, count: int = 1) -> None:
        """The next ``count`` pages answered carry a fresh ``next_page_token`` (never served
        before) that leads to the same page again: paging that never ends, without a
        repeated token."""
        self._add_page_faults("fresh", count)

    def clear_faults(self) -> None:
        """Answer every request normally from now on (drop the faults still pending)."""
        with self._lock:
            self._faults.clear()
            self._page_faults.clear()

    def _add_page_faults(self, kind: str, count: int) -> None:
        if count < 0:
            raise ValueError("count must be >= 0")
        with self._lock:
            self._page_faults += [kind] * count

    def requests(self) -> list[BarsRequest]:
        """Every bars request served so far (faulted ones too), oldest first."""
        with self._lock:
            return list(self.log)

    def clear_log(self) -> None:
        """Forget the requests served so far."""
        with self._lock:
            self.log.clear()

    def handle(self, target: str) -> Answer:
        """Answer ``GET target`` (path and query string)."""
        parts = urlsplit(target)
        path = unquote(parts.path).rstrip("/")
        params = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        with self._lock:
            fault = self._faults.pop(0) if self._faults else None
            retry_after = self._retry_after
        if fault is not None:
            answer = _fault(fault, retry_after, self.clock.now_ns())
        else:
            try:
                answer = 200, {}, self._bars(path, params)
            except ValueError as exc:
                answer = 400, {}, {"code": 40010001, "message": str(exc)}
        with self._lock:
            self.log.append(BarsRequest(path, params, answer[0]))
        return answer

    def _bars(self, path: str, params: Mapping[str, str]) -> dict[str, Any]:
        single = None
        if path not in (STOCK_BARS, CRYPTO_BARS):
            single = path.split("/")[3]
            symbols = [single]
        else:
            symbols = sorted({s for s in (params.get("symbols") or "").split(",") if s})
            if not symbols:
                raise ValueError("symbols is required")
        if (params.get("timeframe") or "1Min") not in ("1Min", "1T", "1min"):
            raise ValueError("only timeframe=1Min is simulated")
        _check_feed(path, params.get("feed"))
        now = self.clock.now_ns()
        start = _time(params.get("start")) if params.get("start") else _day_floor(now)
        end = _time(params.get("end")) if params.get("end") else now
        limit = _limit(params.get("limit"))
        sort = params.get("sort") or "asc"
        if sort not in ("asc", "desc"):
            raise ValueError(f"invalid sort: {sort!r}")
        first = -(-start // MINUTE_NS)  # the first minute starting at or after start
        last = min(end, now) // MINUTE_NS  # bars starting at or before end
        first = max(first, last - 31 * 1440)  # a month at most
        minutes = range(first, last + 1) if sort == "asc" else range(last, first - 1, -1)
        token = params.get("page_token") or None
        at_symbol, at_minute = _decode_token(token)
        bars: dict[str, list[dict[str, Any]]] = {}
        taken = 0
        next_token = None
        for index in range(at_symbol, len(symbols)):
            symbol = symbols[index]
            for position in range(at_minute if index == at_symbol else 0, len(minutes)):
                bar = self.model.bar_as_of(symbol, minutes[position], now)
                if bar is None:
                    continue
                if taken == limit:
                    next_token = _encode_token(index, position)
                    break
                bars.setdefault(symbol, []).append(_bar_json(symbol, bar))
                taken += 1
            if next_token is not None:
                break
        return _page(bars, single, self._page_fault(token, at_symbol, at_minute) or next_token)

    def _page_fault(self, token: str | None, at_symbol: int, at_minute: int) -> str | None:
        """The token an injected paging fault answers instead of the page's own, if any."""
        with self._lock:
            if not self._page_faults:
                return None
            kind = self._page_faults.pop(0)
            self._nonce += 1
            nonce = self._nonce
        if kind == "repeat":
            return token or _encode_token(at_symbol, at_minute)
        return _encode_token(at_symbol, at_minute, nonce)


def _bar_json(symbol: str, bar: Any) -> dict[str, Any]:
    volume = bar.v if is_crypto(symbol) else int(bar.v)
    return {
        "t": rfc3339(bar.start_ns),
        "o": bar.o,
        "h": bar.h,
        "l": bar.low,
        "c": bar.c,
        "v": volume,
        "n": bar.n,
        "vw": bar.vw,
    }


def _page(
    bars: dict[str, list[dict[str, Any]]], single: str | None, token: str | None
) -> dict[str, Any]:
    if single is not None:
        return {"bars": bars.get(single, []), "symbol": single, "next_page_token": token}
    return {"bars": bars, "next_page_token": token}


def _fault(status: int, retry_after: int, now_ns: int) -> Answer:
    if status == 429:
        headers = {
            "X-RateLimit-Limit": str(RATE_LIMIT),
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(now_ns // 1_000_000_000 + retry_after),
            "Retry-After": str(retry_after),
        }
        return 429, headers, {"code": 42910000, "message": "rate limit exceeded"}
    return status, {}, {"code": status * 100_000, "message": "internal server error"}


STOCK_BAR_FEEDS = ("iex", "sip", "delayed_sip", "boats", "overnight", "otc")
"""The ``feed`` values the stock bars endpoints accept (alpaca-py's ``DataFeed``)."""


def _check_feed(path: str, feed: str | None) -> None:
    """A stock bars request's ``feed``, when given, must be one Alpaca has (every bar model
    answers alike whatever the feed; the request log keeps what was asked)."""
    if feed and path != CRYPTO_BARS and feed not in STOCK_BAR_FEEDS:
        raise ValueError(f"invalid feed: {feed!r}")


def _time(text: str | None) -> int:
    assert text is not None
    return parse_time(text)


def _day_floor(now_ns: int) -> int:
    return now_ns - now_ns % (1440 * MINUTE_NS)


def _limit(text: str | None) -> int:
    if not text:
        return DEFAULT_LIMIT
    value = int(text)
    if not 1 <= value <= MAX_LIMIT:
        raise ValueError(f"invalid limit: {value}")
    return value


def _encode_token(symbol_index: int, minute_index: int, nonce: int = 0) -> str:
    """Where the next page starts: the index of its symbol and of its minute in the window
    (a nonce makes a token of its own that leads to the same place)."""
    text = f"bars:{symbol_index}:{minute_index}" + (f":{nonce}" if nonce else "")
    return base64.urlsafe_b64encode(text.encode()).decode()


def _decode_token(token: str | None) -> tuple[int, int]:
    if not token:
        return 0, 0
    try:
        kind, symbol_index, minute_index, *_ = (
            base64.urlsafe_b64decode(token.encode()).decode().split(":")
        )
        if kind != "bars":
            raise ValueError(kind)
        return int(symbol_index), int(minute_index)
    except ValueError:
        raise ValueError(f"invalid page_token: {token!r}") from None
