"""Active/standby election through a Redis lease (``PRODUCER_LEASE``).

Producers with the same lease name elect one holder: the lease key ``P:lease:{LEASE}`` is
taken atomically (``SET NX PX`` in a script that also increments the epoch), renewed and
released by scripts that compare the holder's random token. Only the holder runs the gated
units (the Alpaca sockets and the reconciler); the others stay standbys, connected to Redis
only, trying for the lease often enough to take over within ``LEASE_TTL`` plus a second.

A holder that cannot renew (Redis unreachable, or the lease expired and was taken) steps
down at once: keeping its Alpaca sockets would only earn the new holder 406s, and it could
not enqueue anyway. What its buffers still hold is sent when the broker answers again:
every output is idempotent (order events are deduplicated, prices compare-and-set by time),
so a late batch from a deposed holder does no harm, and no fencing token is needed.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.resources import files
from typing import Any, Literal

import redis

from alpaca_broker.keys import Keys
from alpaca_broker.redis_client import connect
from alpaca_broker.settings import Settings
from producers.supervisor import ProducerUnit

log = logging.getLogger(__name__)

Role = Literal["active", "standby"]


def _script(name: str) -> str:
    return (files("producers") / "lua" / name).read_text("utf-8")


class Lease(ProducerUnit):
    """Holds or waits for the lease, and tells ``on_change`` whether this process is active.

    The holder renews every third of the TTL; a standby tries every ``min(0.5, TTL/5)``
    seconds, so a released lease is taken within half a second and an expired one within
    ``LEASE_TTL`` plus half a second.
    """

    name = "lease"

    def __init__(self, settings: Settings, on_change: Callable[[bool], None]) -> None:
        assert settings.producer_lease is not None
        keys = Keys(settings.redis_key_prefix)
        self.lease = settings.producer_lease
        self._key = keys.lease(self.lease)
        self._epoch_key = keys.lease_epoch(self.lease)
        self._holder = settings.producer_name
        self._ttl_ms = round(settings.lease_ttl * 1000)
        self._renew_every = settings.lease_ttl / 3
        self._poll_every = min(0.5, settings.lease_ttl / 5)
        self._on_change = on_change
        self._token = secrets.token_hex(16)
        self._redis = connect(settings, socket_timeout=1, socket_connect_timeout=1)
        self._acquire = self._redis.register_script(_script("lease_acquire.lua"))
        self._renew = self._redis.register_script(_script("lease_renew.lua"))
        self._stop = threading.Event()
        self.role: Role = "standby"
        self.epoch = 0

    def run(self) -> None:
        while not self._stop.is_set():
            if self.role == "active":
                self._keep()
            else:
                self._try_take()
            self._stop.wait(self._wait())

    def _wait(self) -> float:
        return self._renew_every if self.role == "active" else self._poll_every

    def _try_take(self) -> None:
        since = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        try:
            epoch = int(
                self._acquire(
                    keys=[self._key, self._epoch_key],
                    args=[self._holder, self._token, since, self._ttl_ms],
                )
            )
        except redis.RedisError as exc:
            log.debug("lease %s: cannot reach Redis (%s)", self.lease, exc)
            return
        if epoch:
            self.epoch = epoch
            self._become("active")

    def _keep(self) -> None:
        try:
            kept = int(self._renew(keys=[self._key], args=[self._token, self._ttl_ms]))
            reason = "taken by another producer or expired"
        except redis.RedisError as exc:
            kept, reason = 0, f"Redis unreachable: {exc}"
        if not kept:
            log.warning("lease %s lost (%s); closing the Alpaca connections", self.lease, reason)
            self._become("standby")

    def _become(self, role: Role) -> None:
        if role == self.role:
            return
        self.role = role
        if role == "active":
            log.info("lease %s taken (epoch %d): this producer is active", self.lease, self.epoch)
        self._on_change(role == "active")

    def holder(self) -> dict[str, Any] | None:
        """The lease key's JSON as Redis holds it now (None when free or unreachable)."""
        try:
            raw = self._redis.get(self._key)
        except redis.RedisError:
            return None
        return json.loads(raw) if raw else None

    def stop(self) -> None:
        self._stop.set()

    def flush(self, timeout: float) -> None:
        """Release the lease (the streams were stopped and flushed before): a standby takes
        over at its next try, without waiting for the TTL."""
        if self.role != "active":
            return
        try:
            self._renew(keys=[self._key], args=[self._token, 0])
            log.info("lease %s released", self.lease)
        except redis.RedisError as exc:
            log.warning("lease %s not released (%s); it expires by itself", self.lease, exc)
        self.role = "standby"

    def snapshot(self) -> dict[str, Any]:
        return {"role": self.role, "lease": self.lease, "epoch": self.epoch}
