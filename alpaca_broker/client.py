"""A typed consumer of alpaca-broker's Redis outputs (synchronous; see ``aioclient`` for asyncio).

>>> client = BrokerClient.from_url("redis://localhost:6379/0")
>>> client.latest("SPY")["trade"]["price"]
>>> for item in client.market_events(["SPY"]):
...     if isinstance(item, Gap): ...  # Redis dropped us: events were missed
...     else: print(item["type"], item["symbol"])

``client.subscribe("prices", ["NVDA"])`` changes a stream's universe at run time, as
``alpaca-broker subscribe`` does (``alpaca_broker.universe``).

Live channels (``P:prices:*``, ``P:news``) are resubscribed by themselves after Redis drops
the connection (a slow subscriber is disconnected at its output-buffer limit) and a
:class:`Gap` is yielded in the events' place. Streams (``P:orders:events``,
``P:news:events``) are read with ``XREAD BLOCK`` from an ID, so a consumer that keeps the
last :attr:`StreamEntry.id` it handled resumes exactly there after a restart.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Generic, Literal, TypeVar

import redis

from alpaca_broker.events import BarEvent, Event, MarketEvent, NewsEvent, OrderUpdateEvent
from alpaca_broker.events import parse_event as _parse
from alpaca_broker.keys import Keys
from alpaca_broker.universe import (
    Change,
    apply_change,
    current,
    normalize,
    own_variable,
    producer_docs,
    read,
    report,
    reset,
)

log = logging.getLogger(__name__)

E = TypeVar("E", bound=Event)
MAX_BACKOFF: Final = 5.0
"""Longest wait (seconds) between attempts to reach Redis again."""
READ_COUNT: Final = 500
"""Stream entries read per ``XREAD``."""


@dataclass(frozen=True, slots=True)
class Gap:
    """Events may have been missed on a live channel: the subscription was lost at ``lost_at``
    and back at ``resumed_at`` (epoch seconds); ``reason`` is what Redis or the socket said."""

    reason: str
    lost_at: float
    resumed_at: float


@dataclass(frozen=True, slots=True)
class StreamEntry(Generic[E]):
    """One stream entry: ``id`` is what to pass as ``after`` to resume past it."""

    id: str
    event: E


Time = datetime | int
"""A bar window bound: an aware ``datetime`` or epoch milliseconds."""


def to_ms(value: Time) -> int:
    """Epoch milliseconds of ``value`` (a naive datetime is refused: bars are UTC)."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("a naive datetime is ambiguous: give tzinfo (bars are UTC)")
        return int(value.timestamp() * 1000)
    return int(value)


def bar_range(start: Time, end: Time) -> tuple[int, str]:
    """The ``ZRANGE BYSCORE`` bounds of the half-open window [start, end)."""
    return to_ms(start), f"({to_ms(end)}"


def channels_for(keys: Keys, symbols: Iterable[str] | None) -> tuple[list[str], list[str]]:
    """(channels, patterns) to subscribe to for ``symbols``, or every symbol when None."""
    if symbols is None:
        return [], [keys.prices_pattern]
    return [keys.prices(s) for s in symbols], []


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def parse(raw: Any) -> Event:
    """A published event (bytes or text) in its typed form."""
    return _parse(raw)


def backoff(attempt: int) -> float:
    """Seconds to wait before reconnect attempt ``attempt`` (0, 0.1, 0.2, 0.4, ... 5)."""
    return 0.0 if attempt == 0 else min(MAX_BACKOFF, 0.1 * 2 ** (attempt - 1))


class Reconnects:
    """A pubsub connection's connect callback (redis-py holds it weakly: keep this object):
    the time of each reconnection redis-py made by itself, resubscribing as it did."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def note(self, _connection: Any) -> None:
        self.times.append(time.time())

    def take(self) -> Gap | None:
        """A Gap for the reconnections noted since the last call, if any."""
        if not self.times:
            return None
        at = self.times[-1]
        self.times.clear()
        return Gap("reconnected", at, at)


class Healing:
    """The bookkeeping of a live subscription that heals itself, shared by both clients:
    the backoff before each (re)subscribe, the Gap owed after a lost connection, and what a
    message (or a reconnection redis-py made by itself) yields."""

    def __init__(self) -> None:
        self.lost: tuple[str, float] | None = None
        self.attempt = 0
        self.reconnects = Reconnects()

    def subscribed(self) -> Gap | None:
        """The subscription is up: the Gap for the time it was lost, if it was."""
        self.attempt, lost, self.lost = 0, self.lost, None
        return Gap(lost[0], lost[1], time.time()) if lost is not None else None

    def received(self, message: dict[str, Any] | None) -> list[Event | Gap]:
        """What to yield for one poll: a Gap for silent reconnections, then the event."""
        out: list[Event | Gap] = []
        if (gap := self.reconnects.take()) is not None:
            out.append(gap)
        if message is not None and message["type"] in ("message", "pmessage"):
            out.append(parse(message["data"]))
        return out

    def failed(self, exc: Exception) -> None:
        """The subscription broke: remember since when, back off before the next one."""
        log.warning("subscription lost (%s); subscribing again", exc)
        if self.lost is None:
            self.lost = (str(exc) or type(exc).__name__, time.time())
        self.attempt += 1
        self.reconnects = Reconnects()


R = TypeVar("R")


class ClientBase(Generic[R]):
    """What the sync and asyncio clients share: a Redis client and the key names."""

    def __init__(self, redis_client: R, prefix: str = "alpaca") -> None:
        self.redis = redis_client
        self.keys = Keys(prefix)


def latest_events(held: dict[Any, Any]) -> dict[str, MarketEvent]:
    """``P:latest:{SYMBOL}`` as read (field -> JSON) in typed form."""
    return {_text(kind): parse(raw) for kind, raw in held.items()}  # type: ignore[misc]


class BrokerClient(ClientBase[redis.Redis]):
    """Reads what the workers publish under one key prefix (``REDIS_KEY_PREFIX``)."""

    @classmethod
    def from_url(cls, url: str, prefix: str = "alpaca", **options: Any) -> BrokerClient:
        """A client of the Redis at ``url`` (``redis.Redis.from_url`` ``options``)."""
        return cls(redis.Redis.from_url(url, **options), prefix)

    def close(self) -> None:
        self.redis.close()

    def latest(self, symbol: str) -> dict[str, MarketEvent]:
        """The newest event of each type held for ``symbol`` (``P:latest:{SYMBOL}``)."""
        return latest_events(self.redis.hgetall(self.keys.latest(symbol)))

    def bars(self, symbol: str, start: Time, end: Time) -> list[BarEvent]:
        """The minute bars of ``symbol`` starting in [start, end), oldest first."""
        low, high = bar_range(start, end)
        rows = self.redis.zrange(self.keys.bars(symbol), low, high, byscore=True)
        return [parse(raw) for raw in rows]  # type: ignore[misc]

    def subscribe(
        self, stream: str, symbols: Iterable[str], *, start_from: Iterable[str] | None = None
    ) -> Change:
        """Add ``symbols`` to market-data ``stream``'s universe (``prices``, ``crypto``,
        ``options``, ``news``): the active producer subscribes them on its open connection
        within 2 seconds. The first change starts ``P:universe:{STREAM}`` from the symbols
        variable the producer published, else ``start_from``, else this process's settings.
        Raises ValueError (``BadSymbol``, ``UnknownStream``) before anything reaches Redis."""
        return self._change("subscribe", stream, symbols, start_from)

    def unsubscribe(
        self, stream: str, symbols: Iterable[str], *, start_from: Iterable[str] | None = None
    ) -> Change:
        """Remove ``symbols`` from ``stream``'s universe (as :meth:`subscribe`)."""
        return self._change("unsubscribe", stream, symbols, start_from)

    def subscriptions(self, stream: str) -> dict[str, Any]:
        """``stream``'s universe (``symbols``, ``source``: ``set`` or ``variable``) and, per
        active producer, what Alpaca confirmed, what is missing and every refusal (Alpaca's
        ``code`` and ``msg``): ``alpaca-broker subscriptions STREAM --json``."""
        held = read(self.redis, self.keys, stream)
        universe = current(held, stream, own_variable(stream))
        return report(universe, producer_docs(self.redis, self.keys), self.keys)

    def reset_subscriptions(self, stream: str) -> int:
        """Return ``stream`` to its symbols variable (the set is deleted); returns its size."""
        return reset(self.redis, self.keys, stream)

    def _change(
        self,
        action: Literal["subscribe", "unsubscribe"],
        stream: str,
        symbols: Iterable[str],
        start_from: Iterable[str] | None,
    ) -> Change:
        names = normalize(stream, symbols)
        fallback = tuple(start_from) if start_from is not None else own_variable(stream)
        return apply_change(self.redis, self.keys, stream, action, names, fallback)

    def market_events(
        self, symbols: Iterable[str] | None = None, *, poll: float = 1.0
    ) -> Iterator[MarketEvent | Gap]:
        """Live market events of ``symbols`` (all symbols when None), forever; a :class:`Gap`
        wherever the subscription was lost and had to be made again."""
        channels, patterns = channels_for(self.keys, symbols)
        yield from self._live(channels, patterns, poll)  # type: ignore[misc]

    def live_news(self, *, poll: float = 1.0) -> Iterator[NewsEvent | Gap]:
        """News events as they are published on ``P:news``, with :class:`Gap` markers."""
        yield from self._live([self.keys.news_channel], [], poll)  # type: ignore[misc]

    def order_events(
        self, after: str = "0-0", *, block_ms: int = 1000
    ) -> Iterator[StreamEntry[OrderUpdateEvent]]:
        """Order events of ``P:orders:events`` after stream ID ``after`` (``"0-0"``: from the
        start, ``"$"``: only those added after this call), blocking for more, forever."""
        key = self.keys.orders_events
        return self._stream(key, self._resolve(key, after), block_ms)  # type: ignore[return-value]

    def news(self, after: str = "0-0", *, block_ms: int = 1000) -> Iterator[StreamEntry[NewsEvent]]:
        """News events of ``P:news:events`` after stream ID ``after``, blocking, forever."""
        key = self.keys.news_events
        return self._stream(key, self._resolve(key, after), block_ms)  # type: ignore[return-value]

    def _resolve(self, key: str, after: str) -> str:
        """``after``, with ``"$"`` made the stream's newest ID now (nothing is skipped later)."""
        if after != "$":
            return after
        newest = self.redis.xrevrange(key, count=1)
        return _text(newest[0][0]) if newest else "0-0"

    def _stream(self, key: str, after: str, block_ms: int) -> Iterator[StreamEntry[Event]]:
        last, failures = after, 0
        while True:
            try:
                reply = self.redis.xread({key: last}, count=READ_COUNT, block=block_ms)
                failures = 0
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                failures += 1
                log.warning("reading %s failed (%s); retrying from %s", key, exc, last)
                time.sleep(backoff(failures))
                continue
            for _, entries in reply or ():
                for entry_id, fields in entries:
                    last = _text(entry_id)
                    event = fields.get(b"event", fields.get("event"))
                    yield StreamEntry(last, parse(event))

    def _live(self, channels: list[str], patterns: list[str], poll: float) -> Iterator[Event | Gap]:
        healing = Healing()
        while True:
            time.sleep(backoff(healing.attempt))
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                if channels:
                    pubsub.subscribe(*channels)
                if patterns:
                    pubsub.psubscribe(*patterns)
                # redis-py reconnects and resubscribes a pubsub by itself: note each time.
                pubsub.connection.register_connect_callback(healing.reconnects.note)
                if (gap := healing.subscribed()) is not None:
                    yield gap
                while True:
                    yield from healing.received(pubsub.get_message(timeout=poll))
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                healing.failed(exc)
            finally:
                pubsub.close()
