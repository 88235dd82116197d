"""The producer's health key: states and counters of every stream, refreshed with a TTL."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import redis

from alpaca_broker.keys import Keys
from alpaca_broker.settings import Settings
from producers.unit import ProducerUnit

log = logging.getLogger(__name__)

States = Callable[[], dict[str, dict[str, Any]]]

THREAD_FIELDS = ("thread", "restarts", "last_error")


def health_document(name: str, states: dict[str, dict[str, Any]], status: str) -> dict[str, Any]:
    """The JSON of ``P:health:producer:{NAME}`` from the supervisor's unit states (pure).

    A stream is a unit with a connection ``state`` (``prices``); its ``.handoff`` unit adds
    how many events it still holds.
    """
    streams: dict[str, dict[str, Any]] = {}
    for unit, state in states.items():
        stream, _, part = unit.partition(".")
        if not part and "state" in state:
            streams[stream] = {k: v for k, v in state.items() if k not in THREAD_FIELDS}
    for unit, state in states.items():
        stream, _, part = unit.partition(".")
        if part == "handoff" and stream in streams:
            streams[stream]["buffered"] = state.get("buffered", 0)
    return {
        "name": name,
        "status": status,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "streams": streams,
        "threads": {u: {k: s.get(k) for k in THREAD_FIELDS} for u, s in states.items()},
        "updated_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
    }


class Heartbeat(ProducerUnit):
    """Writes the health key every ``interval`` seconds with a TTL of three intervals."""

    name = "heartbeat"

    def __init__(self, settings: Settings, states: States, interval: float) -> None:
        self._key = Keys(settings.redis_key_prefix).producer_health(settings.producer_name)
        self._producer = settings.producer_name
        self._states = states
        self._interval = interval
        self._redis = redis.Redis.from_url(
            settings.redis_url, socket_timeout=2, socket_connect_timeout=2
        )
        self._stop = threading.Event()
        self._failing = False

    def run(self) -> None:
        while True:
            self.beat("running")
            if self._stop.wait(self._interval):
                return

    def beat(self, status: str) -> None:
        """Write the key once; a Redis failure is logged (once per outage) and ignored."""
        doc = health_document(self._producer, self._states(), status)
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
