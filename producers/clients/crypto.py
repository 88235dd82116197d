"""The crypto stream (alpaca-py ``CryptoDataStream``): 24/7, with order books."""

from __future__ import annotations

from collections.abc import Mapping

from alpaca_broker.errors import ConfigError
from alpaca_broker.settings import CryptoChannel, Settings

SUBSCRIBE_KEYS: Mapping[CryptoChannel, str] = {
    "trades": "trades",
    "quotes": "quotes",
    "bars": "bars",
    "updated_bars": "updatedBars",
    "daily_bars": "dailyBars",
    "orderbooks": "orderbooks",
}


def check(settings: Settings) -> None:
    """A crypto stream needs pairs to subscribe to."""
    if not settings.alpaca_crypto_symbols:
        raise ConfigError("ALPACA_CRYPTO_SYMBOLS", "is required by the crypto stream (or '*')")


def subscription(settings: Settings) -> dict[str, list[str]]:
    """The subscribe message's channel lists for ALPACA_CRYPTO_CHANNELS x SYMBOLS."""
    symbols = list(settings.alpaca_crypto_symbols)
    return {SUBSCRIBE_KEYS[c]: symbols for c in settings.alpaca_crypto_channels}
