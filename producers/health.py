"""Health: each stream's state and counters, and the heartbeat that writes them to Redis.

:class:`StreamStatus` is shared by a stream's threads; :func:`health_document` is the pure
view of ``P:health:producer:{NAME}`` (the metrics endpoint renders the same view), and
:class:`Heartbeat` is the unit that writes it every ``HEALTH_INTERVAL`` with a TTL.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import redis

from alpaca_broker.keys import Keys
from alpaca_broker.redis_client import connect
from alpaca_broker.settings import Settings
from producers.supervisor import ProducerUnit

log = logging.getLogger(__name__)

StreamState = Literal["connecting", "connected", "disconnected", "auth_failed", "stopped"]


@dataclass
class StreamStatus:
    """State machine and counters of one stream.

    Each counter has a single writer thread (the read loop counts ``received``, ``malformed``
    and ``reconnects``; the hand-off thread counts ``enqueued`` and ``dropped``), so plain
    integer updates suffice under the GIL. ``buffered`` reports what the stream holds, not
    yet handed to Celery (set by the stream's hand-off).
    """

    name: str
    state: StreamState = "connecting"
    received: int = 0
    enqueued: int = 0
    dropped: int = 0
    reconnects: int = 0
    malformed: int = 0
    last_message_at: float | None = None
    since: float = field(default_factory=time.time)
    buffered: Callable[[], int] = lambda: 0
    details: Callable[[], dict[str, Any]] = dict
    """More of the stream's state (its bar backfills), merged into its snapshot."""
    subscriptions: Callable[[], dict[str, Any] | None] = lambda: None
    """A market-data stream's universe: desired versus what Alpaca confirmed, the messages
    in flight and the refusals (``producers.universe``), shown as ``subscriptions``."""

    def set_state(self, state: StreamState) -> None:
        """Move to ``state`` and log the transition once."""
        if state != self.state:
            log.info("%s stream: %s -> %s", self.name, self.state, state)
            self.state, self.since = state, time.time()

    def snapshot(self) -> dict[str, Any]:
        """The health key's view of this stream."""
        return {
            "state": self.state,
            "since": self.since,
            "last_message_at": self.last_message_at,
            "received": self.received,
            "enqueued": self.enqueued,
            "dropped": self.dropped,
            "reconnects": self.reconnects,
            "malformed": self.malformed,
            "buffered": self.buffered(),
            **self.details(),
            **({"subscriptions": subs} if (subs := self.subscriptions()) is not None else {}),
        }


THREAD_FIELDS = ("thread", "restarts", "last_error")

Threads = Callable[[], dict[str, dict[str, Any]]]
"""The supervisor's unit states (:meth:`producers.supervisor.Supervisor.states`)."""


@dataclass(frozen=True)
class ProducerView:
    """What the heartbeat and the metrics endpoint read: the streams and the threads."""

    name: str
    streams: Mapping[str, StreamStatus]
    threads: Threads
    extra: Callable[[], dict[str, Any]] = dict
    """More top-level fields (the lease's role, the reconciler's counters...)."""


def health_document(view: ProducerView, status: str) -> dict[str, Any]:
    """The JSON of ``P:health:producer:{NAME}`` (pure over ``view``)."""
    threads = view.threads()
    return {
        "name": view.name,
        "status": status,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "streams": {name: s.snapshot() for name, s in view.streams.items()},
        "threads": {u: {k: s.get(k) for k in THREAD_FIELDS} for u, s in threads.items()},
        **view.extra(),
        "updated_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
    }


class Heartbeat(ProducerUnit):
    """Writes the health key every ``interval`` seconds with a TTL of three intervals."""

    name = "heartbeat"

    def __init__(self, settings: Settings, view: ProducerView) -> None:
        self._key = Keys(settings.redis_key_prefix).producer_health(settings.producer_name)
        self._view = view
        self._interval = settings.health_interval
        self._redis = connect(settings, socket_timeout=2, socket_connect_timeout=2)
        self._stop = threading.Event()
        self._failing = False

    def run(self) -> None:
        while True:
            self.beat("running")
            if self._stop.wait(self._interval):
                return

    def beat(self, status: str) -> None:
        """Write the key once; a Redis failure is logged (once per outage) and ignored."""
        doc = health_document(self._view, status)
        ttl = max(1, round(self._interval * 3))
        try:
            self._redis.set(self._key, json.dumps(doc, default=str), ex=ttl)
        except redis.RedisError as exc:
            if not self._failing:
                log.warning("cannot write health key (%s); will keep trying", exc)
            self._failing = True
            return
        if self._failing:
            log.info("health key written again")
        self._failing = False

    def stop(self) -> None:
        self._stop.set()

    def flush(self, timeout: float) -> None:
        self.beat("stopped")
