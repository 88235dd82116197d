"""Which Redis failures of a task are worth a retry."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis

from alpaca_broker.errors import RetryableError, is_retryable


@contextmanager
def retryable_redis_errors() -> Iterator[None]:
    """Re-raise a passing Redis fault as RetryableError (so autoretry catches every kind).

    Connection faults and timeouts are already retryable; this adds the ones only
    ``is_retryable`` knows (a read-only replica during failover). Others propagate as they are.
    """
    try:
        yield
    except redis.RedisError as exc:
        if is_retryable(exc):
            raise RetryableError(f"Redis: {exc}") from exc
        raise
