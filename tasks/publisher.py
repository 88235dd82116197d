"""Thin I/O: normalized events into Redis, one round trip per price batch or order event."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any, NamedTuple

import redis
from redis.exceptions import NoScriptError

from alpaca_broker.keys import Keys
from alpaca_broker.settings import Settings, load_settings
from tasks.bar_history import BarHistory
from tasks.order_events import OrderEvent
from tasks.price_events import PriceEvent, newest_per_type
from tasks.scripts import ORDER, PRICES, LuaScript

log = logging.getLogger(__name__)


class OrderResult(NamedTuple):
    """What one order event did: ``new`` (published) and ``state_updated`` (hash changed)."""

    new: bool
    state_updated: bool


class Publisher:
    """Writes events to Redis through one client; scripts run by SHA, loaded when missing."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        *,
        stream_maxlen: int,
        dedupe_ttl: int,
        bar_history_days: float = 7,
    ) -> None:
        self._client = client
        self._keys = keys
        # --- bar history (issue 13): its own script, run before the price script ---
        self._bars = BarHistory(client, keys, history_days=bar_history_days)
        self._stream_maxlen = stream_maxlen
        self._dedupe_ttl = dedupe_ttl

    @property
    def client(self) -> redis.Redis:
        """The Redis client this publisher writes through."""
        return self._client

    def publish_prices(self, events: Sequence[PriceEvent]) -> int:
        """PUBLISH every event on its symbol's channel and update the latest hashes.

        One script call, one round trip: the compare-and-set for the newest event per
        (symbol, type), then a PUBLISH per event in order (inside the script: measured
        about twice the events/s of a pipeline of PUBLISH commands, whose per-command
        client cost dominates). Returns the number of hash fields replaced. Redis errors
        propagate (the task's policy retries them).
        """
        if not events:
            return 0
        # Bars first (idempotent), so a subscriber that reads the history on a message finds it.
        self._bars.add(events)
        keys: list[str] = []
        args: list[Any] = [0]
        for update in newest_per_type(events):
            keys.append(self._keys.latest(update.symbol))
            args += (update.type, update.ts_ns, update.received_at, update.json)
        args[0] = len(keys)
        channel = self._keys.prices
        for event in events:
            args += (channel(event.symbol), event.json)
        try:
            replaced = self._client.evalsha(PRICES.sha, len(keys), *keys, *args)
        except NoScriptError:  # nothing ran: loading and running once publishes once
            replaced = self._load_and_run(PRICES, keys, args)
        return int(replaced)

    def publish_order(self, event: OrderEvent) -> OrderResult:
        """Publish ``event`` unless already seen (stream entry, channel message, order hash).

        One atomic script call; a duplicate writes nothing.
        """
        keys = [
            self._keys.order_seen(event.dedupe_id),
            self._keys.orders_events,
            self._keys.order(event.order_id),
            self._keys.order_state_seen(event.state_id),
        ]
        args: list[Any] = [
            self._dedupe_ttl,
            self._stream_maxlen,
            self._keys.orders_channel,
            event.json,
            event.ts_ns,
            event.source,
        ]
        for field, value in event.hash_fields:
            args += (field, value)
        try:
            code = self._client.evalsha(ORDER.sha, len(keys), *keys, *args)
        except NoScriptError:
            code = self._load_and_run(ORDER, keys, args)
        return OrderResult(new=int(code) > 0, state_updated=int(code) == 2)

    def _load_and_run(self, script: LuaScript, keys: list[str], args: list[Any]) -> Any:
        log.info("loading Lua script %s into Redis", script.name)
        self._client.script_load(script.source)
        return self._client.evalsha(script.sha, len(keys), *keys, *args)


def create_publisher(settings: Settings) -> Publisher:
    """A publisher with its own client for ``settings.redis_url``."""
    client = redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=10,
        socket_connect_timeout=5,
        health_check_interval=30,
    )
    return Publisher(
        client,
        Keys(settings.redis_key_prefix),
        stream_maxlen=settings.orders_stream_maxlen,
        dedupe_ttl=settings.order_dedupe_ttl,
        bar_history_days=settings.bar_history_days,
    )


_publisher: Publisher | None = None
_publisher_pid = 0


def get_publisher() -> Publisher:
    """This process's publisher, created on first use and anew after a fork."""
    global _publisher, _publisher_pid
    pid = os.getpid()
    if _publisher is None or _publisher_pid != pid:
        _publisher = create_publisher(load_settings())
        _publisher_pid = pid
    return _publisher


def reset_publisher() -> None:
    """Forget this process's publisher; the next task builds one from the settings anew."""
    global _publisher
    _publisher = None
