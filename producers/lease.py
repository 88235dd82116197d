"""Active/standby election through a Redis lease (``PRODUCER_LEASE``).

Producers with the same lease name elect one holder: the lease key ``P:lease:{LEASE}`` is
taken atomically by a script that also grows the epoch, renewed and released by scripts that
compare the holder's random token. Only the holder runs the gated units (the Alpaca sockets
and the reconciler); the others stay standbys, connected to Redis only, trying for the lease
often enough to take over within ``LEASE_TTL`` plus a second.

A holder that cannot renew (Redis unreachable, or the lease expired and was taken) steps
down at once: keeping its Alpaca sockets would only earn the new holder 406s, and it could
not enqueue anyway. What its buffers still hold is sent when the broker answers again:
every output is idempotent (order events are deduplicated, prices compare-and-set by time),
so a late batch from a deposed holder does no harm, and no fencing token is needed.

**The epoch never repeats, a Sentinel failover included.** The epoch counter
``P:meta:lease:{LEASE}:epoch`` lives in Redis, and Redis replicates asynchronously: a
counter the primary grew and lost with it (SIGKILLed before a replica had the write) would
be grown again to the same value on the promoted replica, and two holders would show one
epoch. Two rules, each covering what the other cannot:

* **Confirmed before it is shown.** When the primary has replicas (``ORDER_REPLICA_WAIT_MS``
  > 0, as for order writes: ``alpaca_broker.replication``), taking the lease is two steps:
  the script first *reserves* the next epoch (grows the counter only) and ``WAIT 1`` in the
  same pipeline confirms a replica has it; only then a second call writes the lease key with
  that epoch, if the counter still is that epoch (no other producer reserved one since: a
  reservation outrun is dropped, so the epochs in the lease key only ever grow) and the
  lease is still free. An unconfirmed reservation is never shown nor acted on: the producer
  stays a standby and tries again at its next poll (the counter merely skips a value). So an
  epoch in ``P:lease`` and the epoch of an active producer are always on a replica, and a
  promoted replica grows its counter past them. Only when no replica confirms for
  :data:`UNCONFIRMED_STEP_UP_S` (a replica connected but stuck) does the producer step up
  anyway, with a warning, as the order path accepts a write on the primary alone: a lease
  must not stay vacant for a stuck replica. Without replicas there is nothing to wait for.
* **No epoch below one seen.** Every producer remembers the highest epoch it has held or
  seen in the lease key (a standby's try for a held lease returns the holder's epoch) and
  the script takes ``max(counter, that) + 1``. So even an epoch that stepped up unconfirmed
  and was lost in a failover is outgrown by the next holder, when that holder is the old
  one or a standby that saw it; only an epoch that nobody alive saw can repeat.

The lease key's own epoch could not serve as the floor: it is only taken when the key is
gone, and a lost counter is lost together with the key written in the same script.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.resources import files
from typing import Any, Final, Literal

import redis

from alpaca_broker.keys import Keys
from alpaca_broker.redis_client import connect
from alpaca_broker.replication import ReplicaWait
from alpaca_broker.settings import Settings
from producers.supervisor import ProducerUnit

log = logging.getLogger(__name__)

Role = Literal["active", "standby"]

CONFIRM_WAIT_MAX_MS: Final = 500
"""The longest ``WAIT`` for a replica to confirm a reserved epoch (``ORDER_REPLICA_WAIT_MS``,
capped: the lease's client gives up on a reply after a second)."""
UNCONFIRMED_STEP_UP_S: Final = 2.0
"""Seconds of reservations no replica confirmed after which a producer steps up anyway."""


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
        self._replicas = ReplicaWait(
            self._redis, min(settings.order_replica_wait_ms, CONFIRM_WAIT_MAX_MS)
        )
        self._unconfirmed_since: float | None = None
        self._stop = threading.Event()
        self.role: Role = "standby"
        self.epoch = 0
        self.seen = 0
        """The highest epoch this producer has held or seen in the lease key."""

    def run(self) -> None:
        while not self._stop.is_set():
            if self.role == "active":
                self._keep()
            else:
                self.try_take()
            self._stop.wait(self._wait())

    def _wait(self) -> float:
        return self._renew_every if self.role == "active" else self._poll_every

    def try_take(self) -> bool:
        """One try for the lease (a standby's poll); True when this producer holds it now.

        A Redis error is a failed try (logged at debug level: a standby polls all the time).
        """
        try:
            epoch = self._take()
        except redis.RedisError as exc:
            log.debug("lease %s: cannot reach Redis (%s)", self.lease, exc)
            return False
        if epoch <= 0:  # held (by the epoch -epoch), or not confirmed yet
            self.seen = max(self.seen, -epoch)
            return False
        self._unconfirmed_since = None
        self.epoch = self.seen = epoch
        self._become("active")
        return True

    def _call(self, reserved: int, take: bool, client: redis.client.Pipeline | None = None) -> Any:
        since = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        args = [self._holder, self._token, since, self._ttl_ms, self.seen, reserved, int(take)]
        return self._acquire(keys=[self._key, self._epoch_key], args=args, client=client)

    def _take(self) -> int:
        """The epoch taken; else 0 or minus the holder's epoch (module docstring)."""
        if not self._replicas.expected():
            return int(self._call(0, take=True))
        pipe = self._redis.pipeline(transaction=False)
        self._call(0, take=False, client=pipe)
        pipe.execute_command("WAIT", 1, self._replicas.timeout_ms)
        reserved, acked = (int(value) for value in pipe.execute())
        if reserved <= 0:
            self._unconfirmed_since = None
            return reserved
        if not self._replicas.acknowledged(acked):
            now = time.monotonic()
            if self._unconfirmed_since is None:
                self._unconfirmed_since = now
            waited = now - self._unconfirmed_since
            if waited < UNCONFIRMED_STEP_UP_S:
                log.info(
                    "lease %s: no replica confirmed epoch %d within %d ms; trying again",
                    self.lease,
                    reserved,
                    self._replicas.timeout_ms,
                )
                return 0
            log.warning(
                "lease %s: no replica confirmed an epoch for %.1f s; taking epoch %d on the "
                "primary alone (a failover now could hand it out again)",
                self.lease,
                waited,
                reserved,
            )
        return int(self._call(reserved, take=True))

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
