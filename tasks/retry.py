"""Which Redis failures of a task are worth a retry, and the order path's patient publish.

Order (and news) tasks never leave the worker through Celery's retry: a retry is a new task
message sent to the broker, and when that send fails (the broker is the same Redis that just
refused the write, or kombu's channel closed under it) Celery rejects the task with
``requeue=False``, which deletes it. :func:`publish_patiently` instead runs the publication
again in place, the task unacknowledged meanwhile (redelivered after the visibility timeout if
the worker dies): a passing fault is waited out for as long as it lasts, an unexpected error is
tried a few times on a fresh client, and only work that fails the same way every time leaves,
into the dead-letter stream (``P:orders:dead``) with its reason. Nothing is acknowledged away.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Final, TypeVar

import redis
from celery.exceptions import Reject
from celery.worker import state as worker_state

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


BACKOFF_FIRST: Final = 0.2
BACKOFF_MAX: Final = 5.0
LOG_EVERY: Final = 30.0
UNEXPECTED_TRIES: Final = 6
"""Tries of a publication that fails with an error no rule calls passing (about 6 s with the
backoff), each on a fresh client, before its work goes to the dead-letter stream."""


class Patience:
    """Backoff and rate-limited logging for one piece of work retried in place."""

    def __init__(self, what: str, sleep: Callable[[float], None] | None = None) -> None:
        self.what = what
        self.waited = 0.0
        self.unexpected = 0
        self._delay: float = BACKOFF_FIRST
        self._logged_at = -LOG_EVERY
        self._sleep = sleep or time.sleep

    def wait(self, exc: BaseException) -> None:
        """Log (at most every LOG_EVERY seconds), then sleep the next backoff.

        Raises Reject(requeue=True) when the worker is shutting down: the task goes back to
        its queue (or, if the broker refuses that too, stays unacknowledged and comes back
        after the visibility timeout), never acknowledged unpublished.
        """
        if worker_state.should_stop is not None or worker_state.should_terminate is not None:
            log.warning("worker stopping: %s goes back to the queue unpublished", self.what)
            raise Reject(f"worker stopping during a retry of {self.what}", requeue=True)
        if self.waited - self._logged_at >= LOG_EVERY:
            log.warning(
                "%s not published yet (%.0fs so far), retrying: %s", self.what, self.waited, exc
            )
            self._logged_at = self.waited
        self._sleep(self._delay)
        self.waited += self._delay
        self._delay = min(self._delay * 2, BACKOFF_MAX)


def publish_patiently(
    action: Callable[[], T],
    what: str,
    *,
    dead_letter: Callable[[str], None],
    fresh_client: Callable[[], None],
    sleep: Callable[[float], None] | None = None,
) -> T | None:
    """``action()`` until it succeeds; None when its work went to the dead-letter stream.

    A passing fault (:func:`alpaca_broker.errors.is_retryable`: the connection, OOM in every
    form, NOREPLICAS, READONLY, MISCONF, ...) is waited out however long it lasts. Any other
    error is retried UNEXPECTED_TRIES times, ``fresh_client()`` first each time (a client left
    in a bad state heals), then ``dead_letter(reason)`` records the work, itself patiently.
    The order script writes nothing when refused, and a duplicate adds nothing, so running it
    again is always safe.
    """
    patience = Patience(what, sleep)
    while True:
        try:
            result = action()
        except Exception as exc:
            if not is_retryable(exc):
                patience.unexpected += 1
                log.warning(
                    "%s failed unexpectedly (try %d of %d): %r",
                    what,
                    patience.unexpected,
                    UNEXPECTED_TRIES,
                    exc,
                )
                if patience.unexpected >= UNEXPECTED_TRIES:
                    write_dead_letter(dead_letter, f"{type(exc).__name__}: {exc}", what, sleep)
                    return None
                fresh_client()
            patience.wait(exc)
            continue
        if patience.waited:
            log.warning("%s published after %.1fs of retries", what, patience.waited)
        return result


def write_dead_letter(
    dead_letter: Callable[[str], None],
    reason: str,
    what: str,
    sleep: Callable[[float], None] | None = None,
) -> None:
    """``dead_letter(reason)``, waiting out every fault (the record must not be lost either)."""
    log.error("%s goes to the dead-letter stream: %s", what, reason)
    patience = Patience(f"dead letter of {what}", sleep)
    while True:
        try:
            dead_letter(reason)
            return
        except Exception as exc:
            patience.wait(exc)
