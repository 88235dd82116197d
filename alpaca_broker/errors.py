"""The project's small error hierarchy, and the one place that says what is worth retrying."""

from __future__ import annotations

import re
from typing import Final

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


TRANSIENT_REPLIES: Final = frozenset(
    {
        "OOM",  # maxmemory with noeviction: writes refused until memory frees
        "NOREPLICAS",  # min-replicas-to-write not met: a replica is back within seconds
        "READONLY",  # a demoted primary, reached through an old connection
        "MISCONF",  # stop-writes-on-bgsave-error after a failed snapshot
        "LOADING",  # a restarted server replaying its AOF
        "BUSY",  # another client's script is running long
        "MASTERDOWN",  # a replica that lost its primary (replica-serve-stale-data no)
        "TRYAGAIN",
    }
)
"""Redis error codes (the first word of an error reply) that a later try can get past."""

_WRAPPED: Final = re.compile(r"(?:[\s:]-|caused error: )([A-Z]+)\b")


def transient_reply(exc: BaseException) -> str | None:
    """The code of a passing Redis refusal in ``exc``, whatever form it took; else None.

    The same refusal reaches us in several shapes, by server version: a plain reply
    (``NOREPLICAS Not enough good replicas to write.``; redis-py maps some codes to classes
    of their own, ``OutOfMemoryError`` or ``ReadOnlyError``, and leaves the others a plain
    ``ResponseError``), or, from inside a Lua script on Redis 6.2, a script error that
    carries it after a dash (``Error running script (call to f_...): @user_script:12:
    -OOM command not allowed when used memory > 'maxmemory'.``), or inside a pipeline's
    error (``Command # 1 (LPUSH orders ...) of pipeline caused error: NOREPLICAS ...``).
    """
    if isinstance(exc, redis.exceptions.OutOfMemoryError):
        return "OOM"
    if isinstance(exc, redis.exceptions.ReadOnlyError):
        return "READONLY"
    if not isinstance(exc, redis.exceptions.ResponseError):
        return None
    text = str(exc).lstrip()
    first = text.split(" ", 1)[0]
    if first in TRANSIENT_REPLIES:
        return first
    for match in _WRAPPED.finditer(text):
        if match.group(1) in TRANSIENT_REPLIES:
            return match.group(1)
    return None


def is_retryable(exc: BaseException) -> bool:
    """True when ``exc`` is a passing fault worth retrying."""
    if transient_reply(exc) is not None:
        return True
    if isinstance(exc, kombu.exceptions.BatchPublishError):
        # Several tasks queued in one round trip (the price hand-off): what broke it decides.
        return exc.__cause__ is not None and is_retryable(exc.__cause__)
    return isinstance(exc, RETRYABLE)
