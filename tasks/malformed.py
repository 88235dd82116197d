"""Malformed input: the exception the normalizers raise, and rate-limited reporting of it."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from celery_app.errors import MalformedMessage

_CONTEXT_CHARS = 300


def excerpt(value: object, limit: int = _CONTEXT_CHARS) -> str:
    """A bounded ``repr`` of the offending input, for a log line."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}...({len(text)} chars)"


class Malformed(MalformedMessage):
    """A message that cannot be normalized: ``kind`` says why, ``context`` shows where."""

    def __init__(self, kind: str, detail: str, context: object = None) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail
        self.context = context


def kind_of(exc: MalformedMessage) -> str:
    """The reason class of ``exc`` (its message when it is not a :class:`Malformed`)."""
    return exc.kind if isinstance(exc, Malformed) else str(exc)


@dataclass
class _Tally:
    suppressed: int = 0
    last_logged: float = float("-inf")


@dataclass
class MalformedReporter:
    """Logs a malformed message once per kind per ``interval`` seconds, counting the rest.

    The first occurrence of a kind is logged at once with its context; later ones within the
    interval are only counted, and the count is reported with the next line of that kind.
    """

    logger: logging.Logger
    interval: float = 60.0
    clock: Callable[[], float] = time.monotonic
    total: int = 0
    _tallies: dict[str, _Tally] = field(default_factory=dict)

    def report(self, exc: MalformedMessage, where: str) -> bool:
        """Count ``exc`` (seen in ``where``); returns True when a line was logged."""
        self.total += 1
        kind = kind_of(exc)
        tally = self._tallies.setdefault(kind, _Tally())
        now = self.clock()
        if now - tally.last_logged < self.interval:
            tally.suppressed += 1
            return False
        context = exc.context if isinstance(exc, Malformed) else None
        if tally.suppressed:
            self.logger.warning(
                "skipped malformed %s: %s; input=%s (and %d more of this kind since last logged)",
                where,
                exc,
                excerpt(context),
                tally.suppressed,
            )
        else:
            self.logger.warning("skipped malformed %s: %s; input=%s", where, exc, excerpt(context))
        tally.suppressed = 0
        tally.last_logged = now
        return True
