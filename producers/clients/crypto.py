"""The crypto stream (alpaca-py ``CryptoDataStream``): 24/7, with order books."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from alpaca.data.historical.crypto import CryptoHistoricalDataClient
from alpaca.data.requests import CryptoBarsRequest
from alpaca.data.timeframe import TimeFrame

from alpaca_broker.errors import ConfigError
from alpaca_broker.settings import CryptoChannel, Settings
from producers.backfill import BarSource, is_crypto_pair

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


def bar_symbols(settings: Settings) -> list[str]:
    """The pairs subscribed to minute bars."""
    return subscription(settings).get("bars", [])


def _client(settings: Settings) -> CryptoHistoricalDataClient:
    key, secret = settings.credentials()
    return CryptoHistoricalDataClient(
        key, secret, raw_data=True, url_override=settings.data_api_url
    )


def _fetch(
    client: Any, settings: Settings, symbols: list[str], start: datetime, end: datetime
) -> Any:
    request = CryptoBarsRequest(
        symbol_or_symbols=symbols, timeframe=TimeFrame.Minute, start=start, end=end
    )
    return client.get_crypto_bars(request)


BARS = BarSource(_client, _fetch, bar_symbols, is_crypto_pair)
"""Missed crypto bars: ``/v1beta3/crypto/us/bars``."""
