"""The universe of a market-data stream at run time: the watcher, and the pure diff and chunking.

``alpaca-broker subscribe``/``unsubscribe`` (and the consumer client) change the set
``P:universe:{STREAM}`` and PUBLISH the stream's name on ``P:universe:changes``
(``alpaca_broker.universe``). Here:

* :class:`UniverseWatcher`, a unit of the active producer, subscribes to that channel and
  reads the set again on every message naming its stream (and every :data:`RESYNC_S`, and
  whenever its Redis connection was made again: a message published meanwhile is lost);
* :class:`StreamUniverse`, shared by a stream's threads, holds the desired universe (the set
  when a command put it in force, else the symbols variable) and tells the stream's read
  loop, on its own asyncio loop, that it changed;
* :class:`SubscriptionBook`, one per connection and used on that loop only, keeps what
  Alpaca confirmed (its ``subscription`` replies list the whole set), the messages awaiting
  a reply, and the refusals; :func:`diff` and :func:`chunk` turn desired versus confirmed
  into ``unsubscribe`` then ``subscribe`` messages of at most :data:`MAX_ENTRIES` symbols
  each, which the read loop (``producers.clients.market``) sends on the live socket.

Alpaca answers each subscribe or unsubscribe message with one ``subscription`` message (the
whole set) or one error, in order, so a reply belongs to the oldest message in flight. A
refusal (405, 409, 410, 413, 400) leaves the stream connected and its earlier symbols
flowing: the refused symbols are kept out of later messages until the next command (or a
reconnect) asks for them again, and the health key shows the refusal.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any, Literal

import redis

from alpaca_broker import universe as shared
from alpaca_broker.keys import Keys
from alpaca_broker.redis_client import connect
from alpaca_broker.settings import Settings
from producers.supervisor import Backoff, ProducerUnit

log = logging.getLogger(__name__)

Action = Literal["subscribe", "unsubscribe"]
MAX_ENTRIES = 1000
"""Most symbols one subscribe or unsubscribe message names, counted on every channel it
names them on (a symbol on trades, quotes and bars counts three times): large messages fail
silently or close the socket (issue 28; the C# SDK's #724 and #763)."""
REPLY_TIMEOUT = 10.0
"""Seconds to wait for Alpaca's reply to a message before comparing again."""
RESYNC_S = 30.0
"""Seconds between reads of the set without a change message (catches a change made while
the watcher's connection was down, or written without the commands)."""
REFUSAL_CODES = frozenset({400, 405, 409, 410, 411, 413})
"""Error codes that refuse a subscribe or unsubscribe message (the stream stays connected)."""
SHOWN = 20
"""Symbols the health key names per list (the counts are exact)."""
KEPT_REFUSALS = 10
BAR_CHANNEL = "bars"


# --- pure ------------------------------------------------------------------------------


def diff(
    desired: AbstractSet[str],
    channels: Sequence[str],
    confirmed: Mapping[str, AbstractSet[str]],
    skip_add: AbstractSet[str] = frozenset(),
    skip_remove: AbstractSet[str] = frozenset(),
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(to subscribe, to unsubscribe), channel -> sorted symbols: every channel of the stream
    carries the whole desired universe (pure). ``skip_*``: symbols refused earlier, not
    asked again."""
    add: dict[str, list[str]] = {}
    remove: dict[str, list[str]] = {}
    for channel in channels:
        held = confirmed.get(channel, frozenset())
        plus = sorted(desired - held - skip_add)
        minus = sorted(held - desired - skip_remove)
        if plus:
            add[channel] = plus
        if minus:
            remove[channel] = minus
    return add, remove


def chunk(
    action: Action, by_channel: Mapping[str, Sequence[str]], limit: int = MAX_ENTRIES
) -> list[dict[str, Any]]:
    """``by_channel`` as ``action`` messages naming at most ``limit`` symbols each, counted
    per channel; a symbol's channels stay in one message (pure)."""
    per_symbol: dict[str, list[str]] = {}
    for channel, symbols in by_channel.items():
        for symbol in symbols:
            per_symbol.setdefault(symbol, []).append(channel)
    messages: list[dict[str, Any]] = []
    current: dict[str, list[str]] = {}
    count = 0
    for symbol, channels in per_symbol.items():
        if count and count + len(channels) > limit:
            messages.append({"action": action, **current})
            current, count = {}, 0
        for channel in channels:
            current.setdefault(channel, []).append(symbol)
        count += len(channels)
    if current:
        messages.append({"action": action, **current})
    return messages


def entries(message: Mapping[str, Any]) -> int:
    """How many symbols a subscribe or unsubscribe message names, counted per channel."""
    return sum(len(v) for k, v in message.items() if k != "action" and isinstance(v, list))


def symbols_of(message: Mapping[str, Any]) -> frozenset[str]:
    """Every symbol a subscribe or unsubscribe message names, on any channel."""
    return frozenset(
        s for k, v in message.items() if k != "action" and isinstance(v, list) for s in v
    )


@dataclass(frozen=True)
class Request:
    """One subscribe or unsubscribe message sent, awaiting Alpaca's reply."""

    action: Action
    message: dict[str, Any]
    initial: bool
    """Part of a connection's first subscription (not a change at run time)."""
    sent_at: float
    """Monotonic seconds."""

    @property
    def symbols(self) -> frozenset[str]:
        return symbols_of(self.message)


def refusal(
    code: int | None, text: str, request: Request | None, at: float, shown: int = 5
) -> dict[str, Any]:
    """The health key's record of a refused message (pure)."""
    symbols = sorted(request.symbols) if request is not None else []
    return {
        "code": code,
        "msg": text,
        "action": request.action if request is not None else None,
        "symbols": len(symbols),
        "sample": symbols[:shown],
        "at": at,
    }


class SubscriptionBook:
    """What one connection asked and what Alpaca confirmed. Changed on the stream's loop
    only; :meth:`snapshot` may run in any thread (the heartbeat's)."""

    def __init__(self, channels: Sequence[str]) -> None:
        self.channels = tuple(channels)
        self.confirmed: dict[str, frozenset[str]] = {ch: frozenset() for ch in self.channels}
        self.pending: deque[Request] = deque()
        self.refused_add: set[str] = set()
        self.refused_remove: set[str] = set()
        self.refusals: deque[dict[str, Any]] = deque(maxlen=KEPT_REFUSALS)
        self.confirmed_at: float | None = None
        self.messages_sent = 0
        self.largest_message = 0
        self._added_bars = False
        self._lock = threading.Lock()

    def plan(self, desired: AbstractSet[str], *, initial: bool, now: float) -> list[Request]:
        """The messages that take the confirmed set to ``desired`` (unsubscribes first, to
        make room under a symbol limit), recorded as in flight."""
        add, remove = diff(
            desired, self.channels, self.confirmed, self.refused_add, self.refused_remove
        )
        requests = [
            Request("unsubscribe", m, initial, now) for m in chunk("unsubscribe", remove)
        ] + [Request("subscribe", m, initial, now) for m in chunk("subscribe", add)]
        with self._lock:
            self.pending.extend(requests)
            self.messages_sent += len(requests)
            for request in requests:
                self.largest_message = max(self.largest_message, entries(request.message))
        return requests

    def on_subscription(self, reply: Mapping[str, Any]) -> Request | None:
        """Alpaca's ``subscription`` reply: the whole confirmed set; it answers the oldest
        message in flight (returned). Symbols that message named but the reply does not show
        as asked are kept out of later messages (recorded as a refusal), so that a symbol
        Alpaca spells otherwise is not asked for forever."""
        confirmed = {
            ch: frozenset(s for s in (reply.get(ch) or ()) if isinstance(s, str))
            for ch in self.channels
        }
        with self._lock:
            self.confirmed = confirmed
            self.confirmed_at = time.time()
            request = self.pending.popleft() if self.pending else None
        if request is None:
            return None
        unlisted: set[str] = set()
        for channel, symbols in request.message.items():
            if channel == "action" or channel not in confirmed:
                continue
            held = confirmed[channel]
            if request.action == "subscribe":
                unlisted.update(s for s in symbols if s not in held)
            else:
                unlisted.update(s for s in symbols if s in held)
        if unlisted:
            text = "accepted, but not as asked in Alpaca's subscription reply"
            shown = Request(request.action, {"s": sorted(unlisted)}, request.initial, 0.0)
            with self._lock:
                (self.refused_add if request.action == "subscribe" else self.refused_remove).update(
                    unlisted
                )
                self.refusals.append(refusal(None, text, shown, time.time()))
        if request.action == "subscribe" and not request.initial and BAR_CHANNEL in request.message:
            self._added_bars = True
        return request

    def on_error(self, code: int, text: str) -> dict[str, Any]:
        """An error that refuses the oldest message in flight (:data:`REFUSAL_CODES`): its
        symbols are kept out of later messages; returns the refusal recorded."""
        with self._lock:
            request = self.pending.popleft() if self.pending else None
            record = refusal(code, text, request, time.time())
            self.refusals.append(record)
            if request is not None:
                refused = self.refused_add if request.action == "subscribe" else self.refused_remove
                refused.update(request.symbols)
        return record

    def take_added_bars(self) -> bool:
        """Whether a change at run time added symbols on the bar channel since the last call."""
        added, self._added_bars = self._added_bars, False
        return added

    def clear_refusals(self) -> None:
        """A command changed the universe: refused symbols are asked for again."""
        with self._lock:
            self.refused_add.clear()
            self.refused_remove.clear()
            self.refusals.clear()

    def expire(self, now: float, timeout: float) -> list[Request]:
        """Forget the messages in flight when the oldest waited more than ``timeout``
        seconds for a reply (returned; the next comparison asks again)."""
        with self._lock:
            if not self.pending or now - self.pending[0].sent_at <= timeout:
                return []
            expired = list(self.pending)
            self.pending.clear()
        return expired

    def snapshot(self, desired: AbstractSet[str]) -> dict[str, Any]:
        """Confirmed versus ``desired``, for the health key."""
        with self._lock:
            confirmed = dict(self.confirmed)
            pending = len(self.pending)
            refusals = list(self.refusals)
            confirmed_at = self.confirmed_at
        on_every = frozenset.intersection(*confirmed.values()) if confirmed else frozenset()
        on_any = frozenset().union(*confirmed.values()) if confirmed else frozenset()
        missing = sorted(desired - on_every)
        unwanted = sorted(on_any - desired)
        return {
            "confirmed": len(on_every & desired),
            "channels": {ch: len(symbols) for ch, symbols in confirmed.items()},
            "missing": len(missing),
            "missing_sample": missing[:SHOWN],
            "unwanted": len(unwanted),
            "unwanted_sample": unwanted[:SHOWN],
            "pending": pending,
            "confirmed_at": confirmed_at,
            "messages_sent": self.messages_sent,
            "largest_message": self.largest_message,
            "refusals": refusals,
        }


# --- the shared state of one stream ----------------------------------------------------

Listener = Callable[[bool], None]
"""Told (from any thread) that the desired universe may have changed; True when a command
asked (refused symbols are then asked for again)."""


class StreamUniverse:
    """One stream's desired universe, shared by its watcher (which reads it from Redis),
    its read loop (which applies it) and its backfill (which fetches added symbols' bars).

    Without ``settings`` it is fixed: the symbols variable, never read from Redis.
    """

    def __init__(
        self,
        stream: str,
        channels: Sequence[str],
        variable: Iterable[str],
        settings: Settings | None = None,
    ) -> None:
        self.stream = stream
        self.channels = tuple(channels)
        self.variable = tuple(variable)
        self.settings = settings
        self.desired: frozenset[str] = frozenset(self.variable)
        self.source: Literal["set", "variable"] = "variable"
        self.invalid: frozenset[str] = frozenset()
        self.read_at: float | None = None
        self.book: SubscriptionBook | None = None
        self.on_added: Callable[[], None] | None = None
        """Called (on the read loop) when a change at run time added bar symbols: the
        stream's backfill fetches their history as on a first start."""
        self._listener: Listener | None = None
        self._store: redis.Redis | None = None
        self._failing = False
        self._lock = threading.Lock()

    @classmethod
    def of(
        cls, stream: str, subscription: Mapping[str, Sequence[str]], settings: Settings | None
    ) -> StreamUniverse:
        """The universe of a stream whose variable subscribes ``subscription`` (a kind's
        channel -> symbols, every channel the same symbols)."""
        variable = next(iter(subscription.values()), [])
        return cls(stream, list(subscription), variable, settings)

    @property
    def keys(self) -> Keys:
        return Keys(self.settings.redis_key_prefix if self.settings else "alpaca")

    def _client(self) -> redis.Redis:
        assert self.settings is not None
        if self._store is None:
            self._store = connect(
                self.settings, decode_responses=True, socket_timeout=5, socket_connect_timeout=3
            )
        return self._store

    def refresh(self, *, commanded: bool = False) -> bool:
        """Read the universe from Redis (the set when in force, else the variable); tell the
        listener when it changed (or ``commanded``). False when Redis could not be read: the
        last universe known stays."""
        if self.settings is None:
            return False
        try:
            held = shared.read(self._client(), self.keys, self.stream)
        except (redis.RedisError, OSError) as exc:
            if not self._failing:
                log.warning(
                    "%s universe: cannot read %s (%s); keeping the last known universe "
                    "(%d symbols)",
                    self.stream,
                    self.keys.universe(self.stream),
                    exc,
                    len(self.desired),
                )
            self._failing = True
            return False
        if self._failing:
            log.info("%s universe: read again", self.stream)
        self._failing = False
        if held.in_force:  # the commands checked each symbol; one written by hand may be bad
            valid = frozenset(s for s in held.members if shared.is_valid(self.stream, s))
            invalid = held.members - valid
        else:  # the variable, exactly as configured (as before any change at run time)
            valid, invalid = frozenset(self.variable), frozenset()
        if invalid and invalid != self.invalid:
            log.warning(
                "%s universe: skipped %d member(s) of %s that are not %s: %s",
                self.stream,
                len(invalid),
                self.keys.universe(self.stream),
                shared.WHAT[self.stream],
                ", ".join(sorted(invalid)[:SHOWN]),
            )
        with self._lock:
            changed = valid != self.desired
            self.desired, self.invalid = valid, invalid
            self.source = "set" if held.in_force else "variable"
            self.read_at = time.time()
            listener = self._listener
        if changed:
            log.info(
                "%s universe: %d symbol(s) from %s",
                self.stream,
                len(valid),
                self.keys.universe(self.stream)
                if held.in_force
                else shared.VARIABLES.get(self.stream, "the variable"),
            )
        if listener is not None and (changed or commanded):
            listener(commanded)
        return True

    def publish_variable(self) -> None:
        """Write the symbols variable into ``P:meta:universe:{STREAM}``, so that the first
        command starts the set from what this producer subscribes (whatever the command's
        own environment says)."""
        if self.settings is None:
            return
        meta = self.keys.universe_meta(self.stream)
        self._client().hset(meta, "variable", json.dumps(list(self.variable)))

    def attach(self, listener: Listener) -> None:
        """The read loop of the current connection listens (one at a time)."""
        with self._lock:
            self._listener = listener

    def detach(self, listener: Listener) -> None:
        with self._lock:
            if self._listener is listener:
                self._listener = None

    def bar_symbols(self) -> list[str]:
        """The symbols the stream subscribes to minute bars (``*``: all), for its backfill."""
        return sorted(self.desired) if BAR_CHANNEL in self.channels else []

    def bar_source(self, source: Any) -> Any:
        """``source`` (a ``producers.backfill.BarSource``) asking for the bars of this
        universe as it stands, instead of the variable's."""
        return dataclasses.replace(source, symbols=lambda _settings: self.bar_symbols())

    def snapshot(self) -> dict[str, Any] | None:
        """The health key's ``subscriptions`` of the stream: the desired universe (its
        source and size), what Alpaca confirmed on the current connection, the messages in
        flight, and the refusals; None before the stream first connected."""
        book = self.book
        if book is None and self.read_at is None:
            return None
        desired = self.desired
        doc: dict[str, Any] = {"source": self.source, "desired": len(desired)}
        if self.invalid:
            doc["invalid"] = sorted(self.invalid)[:SHOWN]
        if book is not None:
            doc.update(book.snapshot(desired))
        return doc

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


# --- the watcher -----------------------------------------------------------------------


@dataclass(eq=False)
class UniverseWatcher(ProducerUnit):
    """Reads a stream's universe again whenever a command announces a change on
    ``P:universe:changes`` (and every :data:`RESYNC_S`); a unit of the active producer.

    A change channel rather than keyspace notifications: those need ``notify-keyspace-events``
    set on the server (a managed Redis may forbid CONFIG SET; a Sentinel failover promotes
    a replica that may lack it) and fire for every write to every key, while the commands
    know when they changed a universe and say so once per change."""

    name: str
    universe: StreamUniverse
    settings: Settings
    _stop: threading.Event = field(default_factory=threading.Event, init=False)
    _reconnected: threading.Event = field(default_factory=threading.Event, init=False)

    def run(self) -> None:
        # Short: once Redis is back, the set is read within about 2 s (changes made while the
        # watcher was away are in it; their messages are not).
        backoff, failures = Backoff(0.5, 2.0), 0
        keys, stream = self.universe.keys, self.universe.stream
        while not self._stop.is_set():
            client = connect(
                self.settings,
                decode_responses=True,
                socket_connect_timeout=3,
                socket_timeout=10,
                health_check_interval=10,
            )
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(keys.universe_changes)
                # redis-py subscribes again by itself after a lost connection: read the set
                # then too (what was published meanwhile is gone).
                assert pubsub.connection is not None
                pubsub.connection.register_connect_callback(self._on_connect)
                self.universe.publish_variable()
                self.universe.refresh()
                if failures:
                    log.info("%s universe: watching %s again", stream, keys.universe_changes)
                failures = 0
                self._watch(pubsub, stream)
            except (redis.RedisError, OSError) as exc:
                delay = backoff.delay(failures)
                if failures == 0:
                    log.warning(
                        "%s universe: cannot watch %s (%s); retrying in %.1fs",
                        stream,
                        keys.universe_changes,
                        exc,
                        delay,
                    )
                failures += 1
                self._stop.wait(delay)
            finally:
                pubsub.close()
                client.close()

    def _watch(self, pubsub: Any, stream: str) -> None:
        resync_at = time.monotonic() + RESYNC_S
        while not self._stop.is_set():
            message = pubsub.get_message(timeout=0.5)
            if self._reconnected.is_set():
                self._reconnected.clear()
                self.universe.refresh()
            if message is not None and message.get("data") == stream:
                self.universe.refresh(commanded=True)
                resync_at = time.monotonic() + RESYNC_S
            elif time.monotonic() >= resync_at:
                self.universe.refresh()
                resync_at = time.monotonic() + RESYNC_S

    def _on_connect(self, _connection: Any) -> None:
        self._reconnected.set()

    def stop(self) -> None:
        self._stop.set()

    def snapshot(self) -> dict[str, Any]:
        return self.universe.snapshot() or {}
