"""The stock stream (alpaca-py ``StockDataStream``): how its channels are subscribed."""

from __future__ import annotations

from collections.abc import Mapping

from alpaca_broker.settings import DataChannel, Settings

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
