"""Which Redis failures of a task are worth a retry."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import redis

from alpaca_broker.errors import RetryableError, is_retryable

log = logging.getLogger(__name__)
T = TypeVar("T")


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


_OOM_BACKOFF_FIRST = 0.2
_OOM_BACKOFF_MAX = 5.0
_OOM_LOG_EVERY = 30.0


def wait_out_full_redis(action: Callable[[], T], what: str) -> T:
    """``action()``, run again (with backoff) for as long as Redis answers out-of-memory.

    For order events: a Celery retry would re-send the task to the broker, and when the
    broker is the same full Redis that send fails and Celery drops the task
    (``Reject(requeue=False)``). Waiting here keeps the task unacknowledged in the worker
    (redelivered after ``visibility_timeout`` if the worker dies) until memory frees. The
    order script writes nothing when refused (see ``order.lua``), so running it again is safe.
    """
    delay, waited, logged_at = _OOM_BACKOFF_FIRST, 0.0, -_OOM_LOG_EVERY
    while True:
        try:
            result = action()
        except redis.exceptions.OutOfMemoryError as exc:
            if waited - logged_at >= _OOM_LOG_EVERY:
                log.warning("Redis full, %s waits for memory (%.0fs so far): %s", what, waited, exc)
                logged_at = waited
            time.sleep(delay)
            waited += delay
            delay = min(delay * 2, _OOM_BACKOFF_MAX)
            continue
        if waited:
            log.warning("Redis memory freed: %s done after %.1fs", what, waited)
        return result
