"""Thin I/O: one news article into ``P:news:events`` and ``P:news``, exactly once, atomically."""

from __future__ import annotations

from typing import Final

import redis
from redis.commands.core import Script

from alpaca_broker.keys import Keys
from alpaca_broker.settings import load_settings
from tasks.news_events import NewsEvent
from tasks.publisher import Publisher, get_publisher
from tasks.scripts import register, script_source

NEWS: Final = script_source("news.lua")
"""Exactly-once publication of one article version (``tasks/lua/news.lua``)."""

NEWS_STREAM_MAXLEN: Final = 100_000
"""``P:news:events`` is capped with ``MAXLEN ~`` this (the contract's figure)."""


class NewsPublisher:
    """Runs the news script through redis-py's ``register_script`` (EVALSHA, loaded on need)."""

    def __init__(self, client: redis.Redis, keys: Keys, *, dedupe_ttl: int) -> None:
        self._keys = keys
        self._dedupe_ttl = dedupe_ttl
        self._script: Script = register(client, NEWS)

    def publish_news(self, event: NewsEvent) -> bool:
        """XADD and PUBLISH ``event`` unless this id's held version is as new; True if new."""
        keys = [self._keys.news_seen(event.id), self._keys.news_events]
        args = [
            self._dedupe_ttl,
            NEWS_STREAM_MAXLEN,
            self._keys.news_channel,
            event.json,
            event.updated_at_ns,
        ]
        return int(self._script(keys=keys, args=args)) == 1


_cached: tuple[Publisher, NewsPublisher] | None = None


def get_news_publisher() -> NewsPublisher:
    """This process's news publisher, on the client of :func:`tasks.publisher.get_publisher`."""
    global _cached
    publisher = get_publisher()
    if _cached is None or _cached[0] is not publisher:
        settings = load_settings()
        news = NewsPublisher(
            publisher.client,
            Keys(settings.redis_key_prefix),
            dedupe_ttl=settings.order_dedupe_ttl,
        )
        _cached = (publisher, news)
    return _cached[1]
