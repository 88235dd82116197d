"""The hand-over of Alpaca's one connection between two holders of a lease.

Alpaca allows one connection per stream and key: a new holder that connects while the old
holder's socket is still open gets a 406 and waits out Alpaca's reaping window
(``ALPACA_CONNECTION_LIMIT_WAIT``, 90 s), which is right for a dead holder's half-open socket.
A holder that was only paused (SIGSTOP, a long GC, a VM stall) past ``LEASE_TTL`` steps down
when it runs again and closes its sockets cleanly: the slot is free at once. It says so in
``P:meta:lease:{LEASE}:released`` (:func:`announce_released`), and a new holder waiting out a
406 (:class:`ReleaseWatch`, polled by ``producers.connection``) connects then instead.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Final

import redis

from alpaca_broker.keys import Keys
from alpaca_broker.redis_client import connect
from alpaca_broker.settings import Settings
from producers.health import StreamStatus

log = logging.getLogger(__name__)

RELEASED_TTL_S: Final = 600
"""How long the released mark is kept (a 406 wait is 90 s)."""
SLACK_NS: Final = 2_000_000_000
"""A release up to this long before the 406 still counts (the refusal and the close can
cross on the way; a wasted attempt only costs another wait)."""


class ReleaseWatch:
    """``freed(refused_at_ns)``: whether a deposed holder closed its sockets since then."""

    def __init__(self, settings: Settings, lease: str) -> None:
        self._key = Keys(settings.redis_key_prefix).lease_released(lease)
        self._redis = connect(settings, socket_timeout=1, socket_connect_timeout=1)

    def freed(self, refused_at_ns: int) -> bool:
        try:
            value = self._redis.get(self._key)
        except redis.RedisError:
            return False  # unknown: keep waiting out the window
        return value is not None and int(value) >= refused_at_ns - SLACK_NS


def announce_released(
    settings: Settings,
    lease: str,
    statuses: Sequence[StreamStatus],
    timeout: float = 30.0,
) -> threading.Thread:
    """After stepping down: once every stream of ``statuses`` has stopped (its socket
    closed), mark the lease released; in a thread of its own (never blocks the caller)."""

    def mark() -> None:
        deadline = time.monotonic() + timeout
        while any(s.state not in ("stopped", "auth_failed") for s in statuses):
            if time.monotonic() > deadline:
                return  # a socket still open: the new holder waits out the window
            time.sleep(0.05)
        key = Keys(settings.redis_key_prefix).lease_released(lease)
        try:
            client = connect(settings, socket_timeout=2, socket_connect_timeout=2)
            client.set(key, time.time_ns(), ex=RELEASED_TTL_S)
            client.close()
            log.info("stepped down: Alpaca sockets closed, lease %r marked released", lease)
        except redis.RedisError as exc:
            log.warning("could not mark lease %r released: %s", lease, exc)

    thread = threading.Thread(target=mark, name="producer.release", daemon=True)
    thread.start()
    return thread


def on_lease_change(
    set_active: Callable[[bool], None],
    settings: Settings,
    lease: str,
    statuses: Sequence[StreamStatus],
) -> Callable[[bool], None]:
    """The lease's ``on_change``: start or stop the gated units, and after stepping down
    announce the release once the sockets are closed."""

    def changed(active: bool) -> None:
        set_active(active)
        if not active:
            announce_released(settings, lease, statuses)

    return changed
