"""The option stream (alpaca-py ``OptionDataStream``): msgpack only, OCC contract symbols."""

from __future__ import annotations

from alpaca_broker.errors import ConfigError
from alpaca_broker.settings import Settings


def check(settings: Settings) -> None:
    """Alpaca refuses ``*`` for option quotes (error 413), and needs contracts to subscribe."""
    symbols = settings.alpaca_option_symbols
    if not symbols:
        raise ConfigError("ALPACA_OPTION_SYMBOLS", "is required by the options stream")
    if "*" in symbols and "quotes" in settings.alpaca_option_channels:
        raise ConfigError(
            "ALPACA_OPTION_SYMBOLS", "'*' is allowed for option trades only, not quotes"
        )


def subscription(settings: Settings) -> dict[str, list[str]]:
    """The subscribe message: ``trades``/``quotes`` of ALPACA_OPTION_SYMBOLS."""
    symbols = list(settings.alpaca_option_symbols)
    return {channel: symbols for channel in settings.alpaca_option_channels}
