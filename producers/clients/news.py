"""The news stream (alpaca-py ``NewsDataStream``): articles naming many symbols, no ``S``."""

from __future__ import annotations

from alpaca_broker.settings import Settings


def subscription(settings: Settings) -> dict[str, list[str]]:
    """The subscribe message: ``news`` for ALPACA_NEWS_SYMBOLS (default ``*``)."""
    return {"news": list(settings.alpaca_news_symbols)}
