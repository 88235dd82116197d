"""The project's small error hierarchy, and the one place that says what is worth retrying."""

from __future__ import annotations

import kombu.exceptions
import redis.exceptions


class BrokerError(Exception):
    """Base of every error alpaca-broker raises on purpose."""

    exit_code = 1


class ConfigError(BrokerError):
    """A setting is missing or invalid; the process stops at start naming the variable."""

    exit_code = 2

    def __init__(self, variable: str, reason: str) -> None:
        super().__init__(f"{variable}: {reason}")
        self.variable = variable
        self.reason = reason


class FatalError(BrokerError):
    """Retrying cannot help: the input or the situation has to change first."""


class CredentialsRejected(FatalError):
    """Alpaca refused the credentials or the subscription; the producer stops (exit 3)."""

    exit_code = 3


class MalformedMessage(FatalError):
    """A message that cannot be normalized: ``kind`` says why, ``context`` shows where.

    Never retried: counted, logged (rate-limited, ``alpaca_broker.logs.MalformedReporter``)
    and skipped, in the producer's read loops and the workers' normalizers alike.
    """

    def __init__(self, kind: str, detail: str = "", context: object = None) -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.detail = detail
        self.context = context


class RetryableError(BrokerError):
    """A passing fault (Redis or the broker unreachable); the same work may succeed later."""


RETRYABLE: tuple[type[BaseException], ...] = (
    RetryableError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.TryAgainError,
    # A full Redis (maxmemory with noeviction) refuses writes until memory frees: the same
    # work succeeds later. A ResponseError subclass, so it must be named here.
    redis.exceptions.OutOfMemoryError,
    kombu.exceptions.OperationalError,
    ConnectionError,
    TimeoutError,
)
"""Exception types a Celery task retries and a producer waits out; everything else is fatal."""


def is_retryable(exc: BaseException) -> bool:
    """True when ``exc`` is a passing fault worth retrying."""
    if isinstance(exc, redis.exceptions.ReadOnlyError):
        return True  # a replica during failover: the primary comes back
    if isinstance(exc, kombu.exceptions.BatchPublishError):
        # Several tasks queued in one round trip (the price hand-off): what broke it decides.
        return exc.__cause__ is not None and is_retryable(exc.__cause__)
    return isinstance(exc, RETRYABLE)
