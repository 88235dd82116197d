"""Pure pieces of the bar backfill: which symbols a ``*`` subscription backfills."""

from __future__ import annotations

from fnmatch import fnmatchcase

from alpaca_broker.keys import Keys
from producers.backfill import held_symbols

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
