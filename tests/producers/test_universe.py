"""The universe at run time, pure parts: desired versus confirmed, messages of at most 1,000
symbols, Alpaca's replies and refusals in the subscription book, and the commands' planning
and symbol checks."""

from __future__ import annotations

import pytest

from alpaca_broker import universe as shared
from alpaca_broker.keys import Keys
from producers.universe import (
    MAX_ENTRIES,
    StreamUniverse,
    SubscriptionBook,
    chunk,
    diff,
    entries,
    symbols_of,
)

CHANNELS = ("trades", "quotes", "bars")


def _reply(**channels: list[str]) -> dict[str, object]:
    return {"T": "subscription", **{ch: channels.get(ch, []) for ch in CHANNELS}}


def test_diff_subscribes_what_is_missing_and_unsubscribes_what_is_no_longer_wanted() -> None:
    confirmed = {"trades": {"SPY", "AAPL"}, "quotes": {"SPY"}, "bars": set()}
    add, remove = diff({"SPY", "NVDA"}, CHANNELS, confirmed)
    assert add == {"trades": ["NVDA"], "quotes": ["NVDA"], "bars": ["NVDA", "SPY"]}
    assert remove == {"trades": ["AAPL"]}


def test_diff_leaves_out_refused_symbols_and_channels_it_does_not_manage() -> None:
    confirmed = {"trades": {"SPY"}, "corrections": {"SPY", "OLD"}}
    add, remove = diff(
        {"AMD", "NVDA"}, ("trades",), confirmed, skip_add={"AMD"}, skip_remove={"SPY"}
    )
    assert (add, remove) == ({"trades": ["NVDA"]}, {})


def test_diff_of_a_universe_in_step_is_empty() -> None:
    confirmed = {ch: {"*", "SPY"} for ch in CHANNELS}
    assert diff({"*", "SPY"}, CHANNELS, confirmed) == ({}, {})


def test_chunks_name_at_most_1000_symbols_counted_per_channel_and_keep_a_symbol_whole() -> None:
    symbols = [f"S{i:05d}" for i in range(12_000)]
    messages = chunk("subscribe", {ch: symbols for ch in CHANNELS})
    assert all(entries(m) <= MAX_ENTRIES for m in messages)
    assert len(messages) == -(-12_000 // (MAX_ENTRIES // len(CHANNELS)))  # 333 a message
    assert all(m["action"] == "subscribe" for m in messages)
    for message in messages:  # each symbol on all three channels of its message
        assert message["trades"] == message["quotes"] == message["bars"]
    assert sorted(s for m in messages for s in m["trades"]) == symbols


def test_chunks_of_a_single_channel_hold_exactly_the_limit() -> None:
    messages = chunk("unsubscribe", {"news": [f"N{i}" for i in range(2_500)]})
    assert [entries(m) for m in messages] == [1000, 1000, 500]
    assert chunk("subscribe", {}) == []


def test_a_connection_subscribes_the_universe_in_chunks_and_learns_what_alpaca_confirmed() -> None:
    book = SubscriptionBook(CHANNELS)
    symbols = {f"S{i}" for i in range(700)}
    requests = book.plan(symbols, initial=True, now=0.0)
    assert len(requests) == 3
    assert all(r.action == "subscribe" for r in requests)
    assert book.largest_message <= MAX_ENTRIES
    confirmed: set[str] = set()
    for request in requests:
        confirmed |= request.symbols
        answered = book.on_subscription(_reply(**{ch: sorted(confirmed) for ch in CHANNELS}))
        assert answered is request
    assert not book.pending
    view = book.snapshot(symbols)
    assert (view["confirmed"], view["missing"], view["unwanted"]) == (700, 0, 0)
    assert book.plan(symbols, initial=False, now=1.0) == []


def test_a_refusal_keeps_the_earlier_set_and_its_symbols_out_until_a_command_asks_again() -> None:
    book = SubscriptionBook(CHANNELS)
    book.plan({"SPY"}, initial=True, now=0.0)
    book.on_subscription(_reply(trades=["SPY"], quotes=["SPY"], bars=["SPY"]))
    (_request,) = book.plan({"SPY", "NVDA", "AMD"}, initial=False, now=1.0)
    refused = book.on_error(405, "symbol limit exceeded")
    assert refused["code"] == 405
    assert refused["msg"] == "symbol limit exceeded"
    assert (refused["action"], refused["symbols"], refused["sample"]) == (
        "subscribe",
        2,
        ["AMD", "NVDA"],
    )
    assert book.confirmed["trades"] == {"SPY"}  # what flowed keeps flowing
    assert book.plan({"SPY", "NVDA", "AMD"}, initial=False, now=2.0) == []  # not asked again
    view = book.snapshot({"SPY", "NVDA", "AMD"})
    assert view["missing_sample"] == ["AMD", "NVDA"]
    assert view["refusals"] == [refused]
    book.clear_refusals()  # the next command
    assert [r.symbols for r in book.plan({"SPY", "NVDA"}, initial=False, now=3.0)] == [
        frozenset({"NVDA"})
    ]


def test_symbols_a_reply_does_not_list_as_asked_are_not_asked_for_forever() -> None:
    book = SubscriptionBook(("trades",))
    book.plan({"BRK.B"}, initial=True, now=0.0)
    book.on_subscription({"T": "subscription", "trades": ["BRK/B"]})
    (again,) = book.plan({"BRK.B"}, initial=False, now=1.0)  # not BRK.B again: BRK/B goes
    assert again.message == {"action": "unsubscribe", "trades": ["BRK/B"]}
    book.on_subscription({"T": "subscription", "trades": ["BRK/B"]})  # and stays: let it be
    assert book.plan({"BRK.B"}, initial=False, now=2.0) == []
    first, second = book.snapshot({"BRK.B"})["refusals"]
    assert (first["code"], first["sample"]) == (None, ["BRK.B"])
    assert (second["action"], second["sample"]) == ("unsubscribe", ["BRK/B"])


def test_messages_unanswered_past_the_timeout_are_forgotten_and_asked_again() -> None:
    book = SubscriptionBook(("trades",))
    book.plan({"SPY"}, initial=True, now=0.0)
    assert book.expire(5.0, 10.0) == []
    assert len(book.expire(10.5, 10.0)) == 1
    assert not book.pending
    assert [r.symbols for r in book.plan({"SPY"}, initial=False, now=11.0)] == [frozenset({"SPY"})]


def test_added_bar_symbols_at_run_time_ask_for_a_backfill_once() -> None:
    book = SubscriptionBook(CHANNELS)
    book.plan({"SPY"}, initial=True, now=0.0)
    book.on_subscription(_reply(trades=["SPY"], quotes=["SPY"], bars=["SPY"]))
    assert not book.take_added_bars()  # a connection's own subscription: the connect's backfill
    book.plan({"SPY", "NVDA"}, initial=False, now=1.0)
    book.on_subscription(_reply(**{ch: ["NVDA", "SPY"] for ch in CHANNELS}))
    assert book.take_added_bars()
    assert not book.take_added_bars()


def test_a_universe_without_redis_is_its_variable_and_backfills_its_bar_symbols() -> None:
    fixed = StreamUniverse.of("prices", {"trades": ["SPY", "AAPL"], "bars": ["SPY", "AAPL"]}, None)
    assert fixed.desired == {"SPY", "AAPL"}
    assert not fixed.refresh()
    assert fixed.bar_symbols() == ["AAPL", "SPY"]
    assert StreamUniverse.of("news", {"news": ["*"]}, None).bar_symbols() == []
    assert symbols_of({"action": "subscribe", "trades": ["A"], "bars": ["B"]}) == {"A", "B"}


@pytest.mark.parametrize(
    ("stream", "good", "bad"),
    [
        ("prices", ["aapl", "BRK.B", "*", " spy "], ["BTC/USD", "AAPL261218C00150000", "1X", ""]),
        ("crypto", ["btc/usd", "1INCH/USD", "*"], ["BTCUSD", "BTC/", "BTC/USD/EUR"]),
        ("options", ["AAPL261218C00150000", "spxw240327p04925000"], ["AAPL", "AAPL2612C1"]),
        ("news", ["AAPL", "BTCUSD", "*"], ["BTC/USD"]),
    ],
)
def test_symbols_are_checked_per_stream_before_they_reach_redis(
    stream: str, good: list[str], bad: list[str]
) -> None:
    assert shared.normalize(stream, good) == list(dict.fromkeys(s.strip().upper() for s in good))
    for symbol in bad:
        with pytest.raises(shared.BadSymbol):
            shared.normalize(stream, [symbol])
    with pytest.raises(shared.UnknownStream):
        shared.normalize("orders", ["SPY"])


def test_the_first_change_starts_the_set_from_the_producers_variable_else_the_callers() -> None:
    fresh = shared.Held(in_force=False, members=frozenset(), published=None)
    change = shared.plan(fresh, "prices", "subscribe", ["NVDA", "SPY"], ["SPY"])
    assert (change.started_from, change.changed, change.size) == (("SPY",), ("NVDA",), 2)
    published = shared.Held(in_force=False, members=frozenset(), published=("QQQ",))
    assert shared.plan(published, "prices", "subscribe", ["NVDA"], ["SPY"]).started_from == ("QQQ",)
    in_force = shared.Held(in_force=True, members=frozenset({"SPY", "NVDA"}), published=("QQQ",))
    change = shared.plan(in_force, "prices", "unsubscribe", ["NVDA", "AMD"], ["SPY"])
    assert (change.started_from, change.changed, change.size) == (None, ("NVDA",), 1)


def test_a_set_emptied_by_commands_stays_the_universe_until_reset() -> None:
    empty = shared.held_from([], {"since": "1.0", "variable": '["SPY"]'})
    assert empty.in_force
    assert empty.published == ("SPY",)
    assert shared.current(empty, "prices", ["IWM"]).symbols == ()
    after_reset = shared.held_from([], {"variable": '["SPY"]'})
    assert shared.current(after_reset, "prices", ["IWM"]).symbols == ("SPY",)
    assert shared.current(shared.held_from([], {}), "prices", ["IWM"]).source == "variable"


def test_one_line_per_change() -> None:
    keys = Keys()
    first = shared.Change("prices", "subscribe", ("NVDA", "AMD"), ("NVDA", "AMD"), 3, ("SPY",))
    assert shared.describe(first, keys) == (
        "prices: subscribed NVDA AMD (2 added); universe 3 symbols in alpaca:universe:prices, "
        "started from ALPACA_SYMBOLS=SPY"
    )
    big = tuple(f"Z{i}" for i in range(12_000))
    line = shared.describe(shared.Change("prices", "subscribe", big, big[1:], 12_001, None), keys)
    assert "\n" not in line
    assert "12000 symbols (Z0 Z1 Z2 ... Z11999)" in line
    assert "11999 added, 1 already in the universe" in line
    gone = shared.Change("crypto", "unsubscribe", ("BTC/USD",), (), 0, None)
    assert "not in the universe: nothing changed" in shared.describe(gone, keys)
