"""Thin I/O: normalized events into Redis, one round trip per price batch or order event."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import msgpack
import redis

from alpaca_broker.keys import Keys
from alpaca_broker.redis_client import connect
from alpaca_broker.replication import ReplicaWait
from alpaca_broker.schema import FINAL_STATUSES
from alpaca_broker.settings import Settings, load_settings
from tasks.bar_history import BarHistory
from tasks.order_events import OrderEvent
from tasks.price_events import PriceEvent, newest_per_type
from tasks.scripts import ORDER_SOURCE, PRICES_SOURCE, register

log = logging.getLogger(__name__)

DEAD_LETTER_PAYLOAD_CHARS = 64 * 1024
"""Most of a task's arguments a dead letter keeps: a task too large to publish (an 8 MB
hand-built order) is not stored whole in ``P:orders:dead`` either."""


class OrderResult(NamedTuple):
    """What one order event did: ``new`` (published) and ``state_updated`` (hash changed)."""

    new: bool
    state_updated: bool


class Publisher:
    """Writes events to Redis through one client; scripts run by SHA, loaded when missing
    (redis-py's ``register_script``)."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        *,
        stream_maxlen: int,
        dedupe_ttl: int,
        bar_history_days: float = 7,
        replica_wait_ms: int = 0,
        order_retention: int = 7 * 86400,
    ) -> None:
        self._client = client
        self._replicas = ReplicaWait(client, replica_wait_ms)
        self._keys = keys
        # --- bar history (issue 13): its own script, run before the price script ---
        self._bars = BarHistory(client, keys, history_days=bar_history_days)
        self._stream_maxlen = stream_maxlen
        self._dedupe_ttl = dedupe_ttl
        self._order_retention = order_retention
        self._prices = register(client, PRICES_SOURCE)
        self._order = register(client, ORDER_SOURCE)

    @property
    def client(self) -> redis.Redis:
        """The Redis client this publisher writes through."""
        return self._client

    def publish_prices(self, events: Sequence[PriceEvent]) -> int:
        """PUBLISH every event on its symbol's channel and update the latest hashes.

        One script call, one round trip: the compare-and-set for the newest event per
        (symbol, type), then a PUBLISH per event in order (inside the script: measured
        about twice the events/s of a pipeline of PUBLISH commands, whose per-command
        client cost dominates; its values in two msgpack arrays: 4.2-4.7 against 6.0-6.5 µs
        of worker CPU an event with an argument each). Returns the number of hash fields
        replaced. Redis errors propagate (the task's policy retries them).
        """
        if not events:
            return 0
        # Bars first (idempotent), so a subscriber that reads the history on a message finds it.
        self._bars.add(events)
        updates = newest_per_type(events)
        keys = [self._keys.latest(update.symbol) for update in updates]
        keys += [self._keys.latest_meta(update.symbol) for update in updates]
        keys.append(self._keys.prices_published)
        # The lag record rides in the same call (no extra round trip): how old the batch's
        # events were when published. A queue's depth says nothing of this on a prefork pool.
        now = time.time_ns()
        received = [event.received_at_ns for event in events]
        fields: list[Any] = []
        for update in updates:
            fields += (update.type, str(update.ts_ns), str(update.received_at_ns), update.json)
        published: list[Any] = []
        for event in events:
            published += (event.symbol, event.json)
        # Two msgpack arrays (raw strings: the script's cmsgpack reads no bin type) instead
        # of an argument per value, which redis-py packs one by one in Python.
        args = [
            len(updates), now, now - min(received), now - max(received), len(events),
            msgpack.packb(fields, use_bin_type=False), self._keys.prices(""),
            msgpack.packb(published, use_bin_type=False),
        ]  # fmt: skip
        replaced = self._prices(keys=keys, args=args)
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
            self._keys.orders_open,
        ]
        args: list[Any] = [
            self._dedupe_ttl,
            self._stream_maxlen,
            self._keys.orders_channel,
            event.json,
            event.ts_ns,
            event.source,
            event.order_id,
            self._order_retention,
            # Final: the hash expires after the retention and leaves the open-order index.
            "1" if dict(event.hash_fields).get("status") in FINAL_STATUSES else "0",
        ]
        for field, value in event.hash_fields:
            args += (field, value)
        if not self._replicas.expected():
            code = self._order(keys=keys, args=args)
        else:
            code = self._order_replicated(keys, args, event.dedupe_id)
        return OrderResult(new=int(code) > 0, state_updated=int(code) == 2)

    def _order_replicated(self, keys: list[str], args: list[Any], dedupe_id: str) -> Any:
        """The order script and ``WAIT 1`` in one pipeline: one connection, one round trip,
        so the event counts as published once a replica has it (alpaca_broker.replication).
        EVALSHA directly (a pipeline's registered script costs a SCRIPT EXISTS per call)."""
        for attempt in (1, 2):
            pipe = self._client.pipeline(transaction=False)
            pipe.evalsha(self._order.sha, len(keys), *keys, *args)
            pipe.execute_command("WAIT", 1, self._replicas.timeout_ms)
            try:
                code, acked = pipe.execute()
            except redis.exceptions.NoScriptError:
                if attempt == 2:
                    raise
                self._client.script_load(self._order.script)
                continue
            self._replicas.check(acked, f"order event {dedupe_id}")
            return code
        raise AssertionError("unreachable")

    def dead_letter(self, task: str, reason: str, payload: Any) -> None:
        """Record work that can never be published in ``P:orders:dead`` (never trimmed: an
        operator reads, fixes and deletes it; ``health`` is unhealthy while it is there).
        ``payload`` is the task's arguments, as JSON, at most DEAD_LETTER_PAYLOAD_CHARS of
        it (an oversized task keeps its head); Redis errors propagate."""
        body = json.dumps(payload, default=repr, ensure_ascii=False)
        if len(body) > DEAD_LETTER_PAYLOAD_CHARS:
            body = f"{body[:DEAD_LETTER_PAYLOAD_CHARS]}...({len(body)} characters in all)"
        fields = {"task": task, "reason": reason[:2000], "payload": body, "at_ns": time.time_ns()}
        self._client.xadd(self._keys.orders_dead_letter, fields)

    def count_malformed_order(self) -> None:
        """Count a dropped malformed order event in Redis; best effort (never raises)."""
        try:
            self._client.incr(self._keys.orders_malformed)
        except redis.RedisError as exc:
            log.warning("could not count a malformed order event: %s", exc)


def create_publisher(settings: Settings) -> Publisher:
    """A publisher with its own client for ``settings.redis_url``."""
    client = connect(
        settings,
        socket_timeout=10,
        socket_connect_timeout=5,
        health_check_interval=30,
    )
    return Publisher(
        client,
        Keys(settings.redis_key_prefix),
        stream_maxlen=settings.orders_stream_maxlen,
        dedupe_ttl=settings.order_dedupe_ttl,
        order_retention=settings.order_retention,
        bar_history_days=settings.bar_history_days,
        replica_wait_ms=settings.order_replica_wait_ms,
    )


_publisher: Publisher | None = None
_publisher_pid = 0
_publisher_lock = threading.Lock()  # a threads pool's first tasks build one publisher


def get_publisher() -> Publisher:
    """This process's publisher, created on first use and anew after a fork."""
    global _publisher, _publisher_pid
    pid = os.getpid()
    if _publisher is None or _publisher_pid != pid:
        with _publisher_lock:
            if _publisher is None or _publisher_pid != pid:
                _publisher = create_publisher(load_settings())
                _publisher_pid = pid
    return _publisher


def reset_publisher() -> None:
    """Forget this process's publisher; the next task builds one from the settings anew."""
    global _publisher
    _publisher = None
