"""The stock stream (alpaca-py ``StockDataStream``): how its channels are subscribed."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from alpaca.data.enums import DataFeed
from alpaca.data.historical.stock import StockHistoricalDataClient
from alpaca.data.requests import StockBarsRequest
from alpaca.data.timeframe import TimeFrame

from alpaca_broker.settings import DataChannel, Settings
from producers.backfill import BarSource, is_stock_symbol

# Our channel names (ALPACA_DATA_CHANNELS) -> the keys of Alpaca's subscribe message.
# Corrections and cancel errors come with trades: Alpaca implies them, and they are never
# named in a subscribe message.
SUBSCRIBE_KEYS: Mapping[DataChannel, str] = {
    "trades": "trades",
    "quotes": "quotes",
    "bars": "bars",
    "updated_bars": "updatedBars",
    "daily_bars": "dailyBars",
    "statuses": "statuses",
    "lulds": "lulds",
}


def subscription(settings: Settings) -> dict[str, list[str]]:
    """The subscribe message's channel lists for ALPACA_DATA_CHANNELS x ALPACA_SYMBOLS."""
    symbols = list(settings.alpaca_symbols)
    return {SUBSCRIBE_KEYS[channel]: symbols for channel in settings.alpaca_data_channels}


def bar_symbols(settings: Settings) -> list[str]:
    """The symbols subscribed to minute bars."""
    return subscription(settings).get("bars", [])


def _client(settings: Settings) -> StockHistoricalDataClient:
    key, secret = settings.credentials()
    return StockHistoricalDataClient(key, secret, raw_data=True, url_override=settings.data_api_url)


def _fetch(
    client: Any, settings: Settings, symbols: list[str], start: datetime, end: datetime
) -> Any:
    # The feed the stream uses: the free plan may not query recent SIP bars.
    request = StockBarsRequest(
        symbol_or_symbols=symbols,
        timeframe=TimeFrame.Minute,
        start=start,
        end=end,
        feed=DataFeed(settings.alpaca_feed),
    )
    return client.get_stock_bars(request)


BARS = BarSource(_client, _fetch, bar_symbols, is_stock_symbol)
"""Missed stock bars: ``/v2/stocks/bars``."""
