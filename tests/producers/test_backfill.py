"""Pieces of the bar backfill: which symbols a ``*`` subscription backfills, the gap ledger's
windows (merged, clipped, cut into chunks), the ledger in a real Redis, bounded pages, and the
health rule on gaps left open."""

from __future__ import annotations

import itertools
from fnmatch import fnmatchcase
from typing import Any, get_args

import pytest
import redis
import requests

from alpaca_broker.health import GAP_UNFILLED_LIMIT_S, unfilled_gaps
from alpaca_broker.keys import Keys
from alpaca_broker.settings import OptionChannel
from producers.backfill import (
    CHUNK_BARS,
    DAY_MS,
    MINUTE_MS,
    PAGE_LIMIT,
    Gap,
    GapLedger,
    PageGuard,
    PagingError,
    TimeoutAdapter,
    chunks,
    clip,
    gap_window,
    group_windows,
    held_symbols,
    history_start,
    is_crypto_pair,
    is_stock_symbol,
    merge,
    page_bound,
    subtract,
    summary,
)
from producers.clients import crypto, stocks
from producers.streams import STREAMS

KEYS = Keys("alpaca")


def test_bar_meta_hashes_sit_outside_the_bar_history_pattern() -> None:
    for keys in (KEYS, Keys("other:prefix")):
        assert fnmatchcase(keys.bars("SPY"), keys.bars_pattern)
        assert not fnmatchcase(keys.bars_meta("SPY"), keys.bars_pattern)
        assert not fnmatchcase(keys.bars_meta("BTC/USD"), keys.bars_pattern)
        assert keys.bars_meta("SPY").startswith(f"{keys.prefix}:meta:")


def test_held_symbols_are_the_histories_sorted_and_skip_an_older_releases_meta_hash() -> None:
    names = [KEYS.bars("SPY"), KEYS.bars("BTC/USD"), KEYS.bars("AAPL"), "alpaca:bars:meta:SPY"]
    assert held_symbols(KEYS, names) == ["AAPL", "BTC/USD", "SPY"]
    assert held_symbols(KEYS, [KEYS.bars("SPY"), KEYS.bars("SPY")]) == ["SPY"]
    assert held_symbols(KEYS, []) == []


def test_with_a_star_each_source_backfills_only_its_own_kind_of_held_symbol() -> None:
    held = held_symbols(KEYS, [KEYS.bars(s) for s in ("SPY", "BTC/USD", "BRK.B", "ETH/USDT")])
    assert [s for s in held if stocks.BARS.owns(s)] == ["BRK.B", "SPY"]
    assert [s for s in held if crypto.BARS.owns(s)] == ["BTC/USD", "ETH/USDT"]
    assert is_crypto_pair("BTC/USD")
    assert not is_crypto_pair("AAPL")
    assert is_stock_symbol("AAPL")
    assert not is_stock_symbol("BTC/USD")


def test_options_have_no_bars_to_backfill() -> None:
    assert "bars" not in get_args(OptionChannel)
    assert STREAMS["options"].backfill is None


# --- the gap ledger's pure parts ------------------------------------------------------------

M = MINUTE_MS
T0 = 1_796_049_000_000  # 2026-11-30T14:30:00Z, a minute start (epoch ms)


def at(minutes: float) -> int:
    """``minutes`` after T0, in epoch ms."""
    return T0 + int(minutes * M)


def test_a_connect_misses_the_minutes_after_the_newest_bar_up_to_the_last_complete_one() -> None:
    # Bars held up to +30, connect at +60 and a half: +31..+59 are missing.
    assert gap_window(at(60.5), at(30), 60, oldest_ms=0) == (at(31), at(59))
    # Nothing held: BAR_BACKFILL_MINUTES back from the last complete minute.
    assert gap_window(at(60.5), None, 5, oldest_ms=0) == (at(55), at(59))
    assert gap_window(at(60.5), None, 0, oldest_ms=0) is None
    # The newest bar is the last complete minute: nothing missed.
    assert gap_window(at(60.5), at(59), 60, oldest_ms=0) is None


def test_a_window_is_clipped_to_bar_history_days() -> None:
    connected = at(60.5)
    oldest = history_start(connected, 0.5)  # half a day back, rounded up to a minute
    assert oldest == at(61) - DAY_MS // 2
    assert gap_window(connected, None, 1440, oldest) == (oldest, at(59))
    assert gap_window(connected, at(-3000), 60, oldest) == (oldest, at(59))
    assert gap_window(connected, None, 60, oldest) == (at(0), at(59))  # within: unchanged


def test_gaps_merge_when_they_overlap_or_touch_and_keep_the_earliest_opening() -> None:
    merged = merge([Gap(at(71), at(79), 3), Gap(at(31), at(59), 1), Gap(at(50), at(70), 2)])
    assert merged == [Gap(at(31), at(79), 1)]
    apart = merge([Gap(at(71), at(79), 2), Gap(at(31), at(59), 1)])
    assert apart == [Gap(at(31), at(59), 1), Gap(at(71), at(79), 2)]
    assert merge([Gap(at(0), at(9), 5), Gap(at(10), at(12), 4)]) == [Gap(at(0), at(12), 4)]
    assert merge([]) == []


def test_subtracting_the_minutes_handed_off_leaves_the_rest_of_each_gap() -> None:
    gaps = [Gap(at(31), at(59), 1), Gap(at(71), at(79), 2)]
    assert subtract(gaps, (at(40), at(49))) == [
        Gap(at(31), at(39), 1),
        Gap(at(50), at(59), 1),
        Gap(at(71), at(79), 2),
    ]
    assert subtract(gaps, (at(31), at(59))) == [Gap(at(71), at(79), 2)]
    assert subtract(gaps, (at(0), at(100))) == []
    assert subtract(gaps, (at(60), at(70))) == gaps


def test_clipping_drops_what_the_history_no_longer_keeps() -> None:
    gaps = [Gap(at(0), at(9), 1), Gap(at(20), at(29), 2)]
    assert clip(gaps, at(5)) == [Gap(at(5), at(9), 1), Gap(at(20), at(29), 2)]
    assert clip(gaps, at(10)) == [Gap(at(20), at(29), 2)]
    assert clip(gaps, at(30)) == []


def test_symbols_sharing_a_window_are_one_request_oldest_window_first() -> None:
    ledger = {
        "SPY": [Gap(at(31), at(59), 1), Gap(at(71), at(79), 2)],
        "AAPL": [Gap(at(71), at(79), 2)],
        "MSFT": [Gap(at(31), at(59), 1)],
    }
    assert list(group_windows(ledger).items()) == [
        ((at(31), at(59)), ["SPY", "MSFT"]),
        ((at(71), at(79)), ["SPY", "AAPL"]),
    ]


def test_a_week_of_forty_symbols_is_fetched_in_bounded_chunks_covering_every_minute() -> None:
    window = (at(0), at(7 * 1440 - 1))
    parts = chunks(window, 40)
    assert parts[0][0] == window[0]
    assert parts[-1][1] == window[1]
    assert all(b[0] == a[1] + M for a, b in itertools.pairwise(parts))
    assert all(40 * ((last - first) // M + 1) <= CHUNK_BARS for first, last in parts)
    assert len(parts) == 9
    assert chunks((at(0), at(4)), 1) == [(at(0), at(4))]
    # The pages a window may take: what it can hold in pages of PAGE_LIMIT, and the last.
    assert page_bound(1, (at(0), at(4))) == 2
    assert page_bound(40, (at(0), at(1249))) == 50_000 // PAGE_LIMIT + 1


def test_the_health_summary_counts_open_gaps_and_names_the_oldest() -> None:
    assert summary({}) == {"open": 0, "symbols": 0, "oldest_opened_at": None, "oldest_from": None}
    ledger = {"SPY": [Gap(at(31), at(59), 5_000), Gap(at(71), at(79), 9_000)], "AAPL": []}
    assert summary(ledger) == {
        "open": 2,
        "symbols": 1,
        "oldest_opened_at": 5.0,
        "oldest_from": "2026-11-30T15:01:00Z",
    }


def test_health_is_unhealthy_when_an_active_producers_gap_stays_open_past_the_limit() -> None:
    now = 10_000.0

    def producer(opened: float | None, role: str | None = None) -> dict[str, Any]:
        gaps = {"open": 3, "symbols": 3, "oldest_opened_at": opened, "oldest_from": "x"}
        backfill = {"gaps": gaps, "last_error": "HTTPError: 500"}
        return {"role": role, "streams": {"prices": {"backfill": backfill}}}

    late = now - GAP_UNFILLED_LIMIT_S - 1
    assert unfilled_gaps({"a": producer(now - 60)}, now) == []
    assert unfilled_gaps({"a": producer(None)}, now) == []
    assert unfilled_gaps({"a": producer(late, "standby")}, now) == []
    (problem,) = unfilled_gaps({"a": producer(late)}, now)
    assert "stream prices has 3 bar gap(s)" in problem
    assert "HTTPError: 500" in problem
    assert GAP_UNFILLED_LIMIT_S == 600


# --- the ledger in a real Redis -------------------------------------------------------------


def test_the_ledger_keeps_a_gap_older_than_a_later_reconnect_until_its_minutes_are_handed_off(
    redis_client: redis.Redis,
) -> None:
    """Item 1 of issue 26: bars held +0..+30, a connect at +60 while REST fails, the stream
    delivers +60..+70, a reconnect at +80: both gaps stay, and each leaves only as its minutes
    are handed off."""
    ledger = GapLedger(redis_client, KEYS.bar_gaps("prices"))
    assert ledger.add({"SPY": (at(31), at(59))}, opened_ms=1_000) == {
        "SPY": [Gap(at(31), at(59), 1_000)]
    }
    ledger.add({"SPY": (at(71), at(79)), "AAPL": (at(75), at(79))}, opened_ms=2_000)
    assert ledger.load() == {
        "SPY": [Gap(at(31), at(59), 1_000), Gap(at(71), at(79), 2_000)],
        "AAPL": [Gap(at(75), at(79), 2_000)],
    }
    ledger.remove(["SPY", "AAPL"], (at(71), at(79)))
    assert ledger.load() == {"SPY": [Gap(at(31), at(59), 1_000)]}
    assert ledger.clip(at(40)) == {"SPY": [Gap(at(40), at(59), 1_000)]}
    ledger.remove(["SPY"], (at(40), at(59)))
    assert ledger.load() == {}
    assert not redis_client.exists(KEYS.bar_gaps("prices"))
    # Under P:meta:, outside the bar-history pattern.
    assert not fnmatchcase(KEYS.bar_gaps("prices"), KEYS.bars_pattern)


# --- bounded pages -------------------------------------------------------------------------


class PagedClient:
    """An alpaca-py-shaped client (its session, its ``get``, its paging loop) answering
    ``pages`` in turn: what PageGuard wraps."""

    def __init__(self, pages: list[dict[str, Any]]) -> None:
        self._session = requests.Session()
        self.asked: list[dict[str, Any]] = []
        self._pages = pages

    def get(self, path: str, data: Any = None) -> dict[str, Any]:
        self.asked.append(dict(data or {}))
        return self._pages[min(len(self.asked), len(self._pages)) - 1]

    def get_bars(self) -> dict[str, Any]:
        """alpaca-py's ``_get_marketdata`` loop: follow next_page_token, keep every page."""
        kept: dict[str, list[Any]] = {}
        params: dict[str, Any] = {"symbols": "SPY"}
        while True:
            answer = self.get("/stocks/bars", params)
            for symbol, bars in answer["bars"].items():
                kept.setdefault(symbol, []).extend(bars)
            token = answer.get("next_page_token")
            if token is None:
                return kept
            params["page_token"] = token


def page(token: str | None, *minutes: int) -> dict[str, Any]:
    bars = [{"t": f"2026-11-30T15:{m:02d}:00Z", "o": 1, "h": 1, "l": 1, "c": 1} for m in minutes]
    return {"bars": {"SPY": bars}, "next_page_token": token}


def test_the_page_guard_hands_off_each_page_and_alpaca_py_keeps_nothing() -> None:
    client = PagedClient([page("a", 1, 2), page("b", 3), page(None, 4)])
    guard = PageGuard(client, timeout=30)
    seen: list[Any] = []
    guard.begin(max_pages=3, sink=seen.append)
    assert client.get_bars() == {}  # nothing accumulates in alpaca-py's loop
    guard.end()
    assert [len(bars["SPY"]) for bars in seen] == [2, 1, 1]
    assert [a.get("page_token") for a in client.asked] == [None, "a", "b"]
    assert all(a["limit"] == PAGE_LIMIT for a in client.asked)
    # Every request of its session has a timeout.
    for url in ("https://data.alpaca.markets/v2/stocks/bars", "http://127.0.0.1:1/v2"):
        adapter = client._session.get_adapter(url)
        assert isinstance(adapter, TimeoutAdapter)
        assert adapter.timeout == 30


def test_a_page_token_seen_before_ends_the_fetch_as_a_failure() -> None:
    client = PagedClient([page("a", 1), page("b", 2), page("a", 3)])
    guard = PageGuard(client, timeout=30)
    guard.begin(max_pages=100, sink=lambda bars: None)
    with pytest.raises(PagingError, match="seen before"):
        client.get_bars()
    assert len(client.asked) == 3


def test_more_pages_than_the_window_can_hold_end_the_fetch_as_a_failure() -> None:
    endless = [page(f"t{i}", 1) for i in range(50)]  # a fresh token every time
    client = PagedClient(endless)
    guard = PageGuard(client, timeout=30)
    guard.begin(max_pages=page_bound(1, (at(0), at(4))), sink=lambda bars: None)
    with pytest.raises(PagingError, match="more than 2 page"):
        client.get_bars()
    assert len(client.asked) == 2
