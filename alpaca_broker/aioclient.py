"""The asyncio twin of :class:`alpaca_broker.client.BrokerClient` (``redis.asyncio``).

>>> client = AsyncBrokerClient.from_url("redis://localhost:6379/0")
>>> async for item in client.market_events(["SPY"]):
...     ...  # a typed event, or a Gap where the subscription was lost and made again
>>> await client.subscribe("prices", ["NVDA"])  # the producer subscribes it within 2 s
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable
from typing import Any, Literal

import redis
import redis.asyncio as aioredis

from alpaca_broker.client import (
    READ_COUNT,
    ClientBase,
    Gap,
    Healing,
    StreamEntry,
    Time,
    backoff,
    bar_range,
    channels_for,
    latest_events,
    parse,
)
from alpaca_broker.events import BarEvent, Event, MarketEvent, NewsEvent, OrderUpdateEvent
from alpaca_broker.universe import (
    Change,
    apply_change_async,
    current,
    normalize,
    own_variable,
    producer_docs_async,
    read_async,
    report,
    reset_async,
)

log = logging.getLogger(__name__)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class AsyncBrokerClient(ClientBase[aioredis.Redis]):
    """Reads what the workers publish under one key prefix, with asyncio."""

    @classmethod
    def from_url(cls, url: str, prefix: str = "alpaca", **options: Any) -> AsyncBrokerClient:
        return cls(aioredis.Redis.from_url(url, **options), prefix)

    async def close(self) -> None:
        await self.redis.aclose()

    async def latest(self, symbol: str) -> dict[str, MarketEvent]:
        """The newest event of each type held for ``symbol``."""
        return latest_events(await self.redis.hgetall(self.keys.latest(symbol)))

    async def bars(self, symbol: str, start: Time, end: Time) -> list[BarEvent]:
        """The minute bars of ``symbol`` starting in [start, end), oldest first."""
        low, high = bar_range(start, end)
        rows = await self.redis.zrange(self.keys.bars(symbol), low, high, byscore=True)
        return [parse(raw) for raw in rows]  # type: ignore[misc]

    async def subscribe(
        self, stream: str, symbols: Iterable[str], *, start_from: Iterable[str] | None = None
    ) -> Change:
        """Add ``symbols`` to ``stream``'s universe (``BrokerClient.subscribe``)."""
        return await self._change("subscribe", stream, symbols, start_from)

    async def unsubscribe(
        self, stream: str, symbols: Iterable[str], *, start_from: Iterable[str] | None = None
    ) -> Change:
        """Remove ``symbols`` from ``stream``'s universe (``BrokerClient.unsubscribe``)."""
        return await self._change("unsubscribe", stream, symbols, start_from)

    async def subscriptions(self, stream: str) -> dict[str, Any]:
        """``stream``'s universe and what Alpaca confirmed (``BrokerClient.subscriptions``)."""
        held = await read_async(self.redis, self.keys, stream)
        universe = current(held, stream, own_variable(stream))
        return report(universe, await producer_docs_async(self.redis, self.keys), self.keys)

    async def reset_subscriptions(self, stream: str) -> int:
        """Return ``stream`` to its symbols variable; returns the deleted set's size."""
        return await reset_async(self.redis, self.keys, stream)

    async def _change(
        self,
        action: Literal["subscribe", "unsubscribe"],
        stream: str,
        symbols: Iterable[str],
        start_from: Iterable[str] | None,
    ) -> Change:
        names = normalize(stream, symbols)
        fallback = tuple(start_from) if start_from is not None else own_variable(stream)
        return await apply_change_async(self.redis, self.keys, stream, action, names, fallback)

    async def market_events(
        self, symbols: Iterable[str] | None = None, *, poll: float = 1.0
    ) -> AsyncIterator[MarketEvent | Gap]:
        """Live market events of ``symbols`` (all when None), with :class:`Gap` markers."""
        channels, patterns = channels_for(self.keys, symbols)
        async for item in self._live(channels, patterns, poll):
            yield item  # type: ignore[misc]

    async def live_news(self, *, poll: float = 1.0) -> AsyncIterator[NewsEvent | Gap]:
        """News events as they are published on ``P:news``, with :class:`Gap` markers."""
        async for item in self._live([self.keys.news_channel], [], poll):
            yield item  # type: ignore[misc]

    async def order_events(
        self, after: str = "0-0", *, block_ms: int = 1000
    ) -> AsyncIterator[StreamEntry[OrderUpdateEvent]]:
        """Order events after stream ID ``after``, blocking for more, forever (``"$"``: those
        added after the iteration starts)."""
        async for entry in self._stream(self.keys.orders_events, after, block_ms):
            yield entry  # type: ignore[misc]

    async def news(
        self, after: str = "0-0", *, block_ms: int = 1000
    ) -> AsyncIterator[StreamEntry[NewsEvent]]:
        """News events of ``P:news:events`` after stream ID ``after``, blocking, forever."""
        async for entry in self._stream(self.keys.news_events, after, block_ms):
            yield entry  # type: ignore[misc]

    async def _stream(
        self, key: str, after: str, block_ms: int
    ) -> AsyncIterator[StreamEntry[Event]]:
        last, failures = after, 0
        while True:
            try:
                if last == "$":
                    newest = await self.redis.xrevrange(key, count=1)
                    last = _text(newest[0][0]) if newest else "0-0"
                reply = await self.redis.xread({key: last}, count=READ_COUNT, block=block_ms)
                failures = 0
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                failures += 1
                log.warning("reading %s failed (%s); retrying from %s", key, exc, last)
                await asyncio.sleep(backoff(failures))
                continue
            for _, entries in reply or ():
                for entry_id, fields in entries:
                    last = _text(entry_id)
                    yield StreamEntry(last, parse(fields.get(b"event", fields.get("event"))))

    async def _live(
        self, channels: list[str], patterns: list[str], poll: float
    ) -> AsyncIterator[Event | Gap]:
        healing = Healing()
        while True:
            await asyncio.sleep(backoff(healing.attempt))
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                if channels:
                    await pubsub.subscribe(*channels)
                if patterns:
                    await pubsub.psubscribe(*patterns)
                pubsub.connection.register_connect_callback(healing.reconnects.note)
                if (gap := healing.subscribed()) is not None:
                    yield gap
                while True:
                    for item in healing.received(await pubsub.get_message(timeout=poll)):
                        yield item
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                healing.failed(exc)
            finally:
                await pubsub.aclose()
