"""Pure pieces of the bar backfill: which symbols a ``*`` subscription backfills."""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import get_args

from alpaca_broker.keys import Keys
from alpaca_broker.settings import OptionChannel
from producers.backfill import held_symbols, is_crypto_pair, is_stock_symbol
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
