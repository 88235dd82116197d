"""Order writes confirmed by a replica (Redis ``WAIT``) before they count as done.

Redis replicates asynchronously: a write the primary acknowledged may be lost when the
primary dies before a replica received it and Sentinel promotes that replica. For prices
that costs one superseded price; for an order event it would be a lost fill. So, when the
primary has replicas, the order path follows each write with ``WAIT 1 <timeout>`` on the
same connection (a pipeline: one round trip) and counts the write as done only then:

* the worker (``tasks.publisher``): the order script and ``WAIT`` in one pipeline;
* the producer (``producers.replicated``): after the task message is pushed, a marker
  ``INCR`` and ``WAIT`` on its own connection. Replication is one ordered stream, so a
  replica that has the later marker has the task message too;
* the lease (``producers.lease``): a reserved epoch and ``WAIT`` in one pipeline, so that an
  epoch is shown and acted on only once a promoted replica could not hand it out again.

**Fallback.** When no replica acknowledges within ``ORDER_REPLICA_WAIT_MS``, the write is
accepted anyway and a warning is logged (rate-limited): a dead or lagging replica must
not stop the order flow; the primary still holds the write, and only a failover within
that window could lose it (docs/reliability.md, "Redis through Sentinel").

The replica count comes from ``INFO replication``, cached for :data:`REFRESH_S` seconds and
read again at once when a ``WAIT`` comes back short (a replica went away, or a failover put
us on a new primary): with no replica there is nothing to wait for.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Final

import redis

log = logging.getLogger(__name__)

REFRESH_S: Final = 5.0
"""Seconds a primary's replica count is trusted before ``INFO replication`` is asked again."""
_WARN_EVERY_S: Final = 10.0


def connected_replicas(info: dict[str, Any]) -> int:
    """The replicas an ``INFO replication`` answer says are online (0 on a replica)."""
    if str(info.get("role", "master")) != "master":
        return 0
    return int(info.get("connected_slaves", 0) or 0)


class ReplicaWait:
    """Knows whether the primary behind ``client`` has replicas, and waits for one."""

    def __init__(self, client: redis.Redis, timeout_ms: int) -> None:
        self._client = client
        self.timeout_ms = timeout_ms
        self._replicas = 0
        self._checked = -REFRESH_S
        self._warned = -_WARN_EVERY_S
        self.short = 0
        """How many writes were accepted without a replica's acknowledgement."""

    def expected(self) -> int:
        """Replicas to wait for (0: none, or waiting switched off)."""
        if self.timeout_ms <= 0:
            return 0
        now = time.monotonic()
        if now - self._checked >= REFRESH_S:
            self._replicas = connected_replicas(self._client.info("replication"))
            self._checked = now
        return min(self._replicas, 1)

    def acknowledged(self, acked: int) -> bool:
        """Whether a ``WAIT`` answer counts a replica; when not, the replicas are looked at
        again (``INFO``) before the next write. The caller decides what an unconfirmed write
        means (:meth:`check` for the order path, ``producers.lease`` for an epoch)."""
        if int(acked) >= 1:
            return True
        self._checked = -REFRESH_S  # ask INFO again before the next write
        return False

    def check(self, acked: int, what: str) -> bool:
        """Judge a ``WAIT`` answer: True when a replica has the write, else the fallback
        (log, count, look at the replicas again next time) and False."""
        if self.acknowledged(acked):
            return True
        self.short += 1
        now = time.monotonic()
        if now - self._warned >= _WARN_EVERY_S:
            log.warning(
                "no replica acknowledged %s within %d ms; accepted on the primary alone "
                "(%d such writes so far)",
                what,
                self.timeout_ms,
                self.short,
            )
            self._warned = now
        return False

    def marker(self, key: str, what: str) -> bool:
        """A write of this connection (``INCR key``) followed by ``WAIT``: once a replica has
        the marker it has every write the primary made before it. True when confirmed
        (or nothing to wait for)."""
        if not self.expected():
            return True
        pipe = self._client.pipeline(transaction=False)
        pipe.incr(key)
        pipe.execute_command("WAIT", 1, self.timeout_ms)
        _, acked = pipe.execute()
        return self.check(int(acked), what)
