"""Waiting out a Redis failover in a long-running reader (``tail``, consumers)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Final

import redis

log = logging.getLogger(__name__)

RETRYABLE_REDIS: Final = (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError)
"""What a reader sees while Sentinel promotes a replica: worth connecting again."""
GIVE_UP_AFTER_S: Final = 60.0
"""Consecutive seconds without a working connection after which a reader gives up."""


class Attempt:
    """One (re)connection of a reader: ``failed`` waits with backoff or gives up."""

    def __init__(self, follow: bool, give_up_after: float) -> None:
        self._follow = follow
        self._give_up_after = give_up_after
        self._failing_since: float | None = None
        self._delay = 0.1

    def reset(self) -> None:
        """The connection works: the next failure starts a fresh wait."""
        self._failing_since = None
        self._delay = 0.1

    def failed(self, exc: BaseException) -> None:
        """Re-raise ``exc`` unless following a failover and not yet past the deadline."""
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        if not self._follow or now - self._failing_since > self._give_up_after:
            raise exc
        log.info("Redis connection lost (%s); connecting again", exc)
        time.sleep(self._delay)
        self._delay = min(self._delay * 2, 2.0)


def failover_attempts(follow: bool, give_up_after: float = GIVE_UP_AFTER_S) -> Iterator[Attempt]:
    """Yield the same :class:`Attempt` for each (re)connection; without ``follow``, the first
    failure propagates (one connection only)."""
    attempt = Attempt(follow, give_up_after)
    while True:
        yield attempt
