"""One logging setup for every process: text or JSON lines, each tagged with its component.

The component names the process part that wrote the line (``producer``, ``producer.prices``,
``worker``, ``simulator``). It is per thread, so the price and order threads of one producer
process (and alpaca-py's own lines inside them) are told apart.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Literal, TextIO

from alpaca_broker.errors import MalformedMessage
from alpaca_broker.redaction import Redactor

if TYPE_CHECKING:
    from sys import UnraisableHookArgs

log = logging.getLogger(__name__)
_local = threading.local()
_default_component = "main"


def set_component(name: str) -> None:
    """Tag every line logged from the calling thread with ``name``."""
    _local.component = name


def current_component() -> str:
    """The component of the calling thread (the process default when unset)."""
    return getattr(_local, "component", _default_component)


class _ComponentFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.component = current_component()
        return True


class _Redacting(logging.Formatter):
    """Replaces every form of every known secret with ``***`` in the finished line
    (:mod:`alpaca_broker.redaction`): raw, JSON-, repr- and percent-escaped alike."""

    def __init__(self, fmt: str | None, secrets: Iterable[str]) -> None:
        super().__init__(fmt)
        self.redact = Redactor(secrets)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return (
            datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        )

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(self.render(record))

    def render(self, record: logging.LogRecord) -> str:
        return super().format(record)


class _JsonFormatter(_Redacting):
    """One JSON object a line. Message and traceback are redacted before they are escaped
    into JSON, and the finished line again (in its escaped forms)."""

    def render(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": self.formatTime(record),
            "level": record.levelname,
            "component": getattr(record, "component", _default_component),
            "logger": record.name,
            "message": self.redact(record.getMessage()),
        }
        if record.exc_info:
            doc["exc_info"] = self.redact(self.formatException(record.exc_info))
        return json.dumps(doc, default=str)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record is emitted, not when the handler was
    made: a test runner (or a daemonizing wrapper) may swap and close the earlier one."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


TEXT_FORMAT = "%(asctime)s %(levelname)-7s [%(component)s] %(name)s: %(message)s"


def setup_logging(
    component: str,
    *,
    fmt: Literal["text", "json"] = "text",
    level: str = "INFO",
    secrets: Iterable[str] = (),
) -> None:
    """Configure the root logger for this process (replaces any earlier setup), and route
    uncaught exceptions (main thread, other threads, unraisable) through it."""
    global _default_component
    _default_component = component
    set_component(component)
    handler = _StderrHandler()
    handler.addFilter(_ComponentFilter())
    secrets = tuple(secrets)
    handler.setFormatter(
        _JsonFormatter(None, secrets) if fmt == "json" else _Redacting(TEXT_FORMAT, secrets)
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Chatty libraries: their INFO lines are per connection or per message.
    for name in ("websockets", "urllib3", "asyncio"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    _install_hooks()


def _install_hooks() -> None:
    """Python prints an uncaught exception's traceback to stderr itself, past every handler:
    it goes through the redacting handler instead (a secret in an exception's message or in a
    repr of its arguments is masked like any other line). Only over Python's own hooks: a
    host that installed its own (a test runner, a debugger) keeps it."""
    if sys.excepthook in (sys.__excepthook__, _log_uncaught):
        sys.excepthook = _log_uncaught
    if threading.excepthook in (threading.__excepthook__, _log_uncaught_in_thread):
        threading.excepthook = _log_uncaught_in_thread
    if sys.unraisablehook in (sys.__unraisablehook__, _log_unraisable):
        sys.unraisablehook = _log_unraisable


def _log_uncaught(
    exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> None:
    if issubclass(exc_type, KeyboardInterrupt):  # Ctrl-C: Python's own one line
        sys.__excepthook__(exc_type, exc, tb)
        return
    log.critical("uncaught exception", exc_info=(exc_type, exc, tb))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if issubclass(args.exc_type, SystemExit):  # as threading's own hook: a thread's exit
        return
    name = args.thread.name if args.thread is not None else "?"
    log.critical(
        "uncaught exception in thread %s",
        name,
        exc_info=(args.exc_type, args.exc_value or args.exc_type(), args.exc_traceback),
    )


def _log_unraisable(unraisable: UnraisableHookArgs) -> None:
    value = unraisable.exc_value or unraisable.exc_type()
    log.error(
        "%s: %r",
        unraisable.err_msg or "Exception ignored in",
        unraisable.object,
        exc_info=(unraisable.exc_type, value, unraisable.exc_traceback),
    )


_CONTEXT_CHARS = 300


def excerpt(value: object, limit: int = _CONTEXT_CHARS) -> str:
    """A bounded ``repr`` of the offending input, for a log line."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}...({len(text)} chars)"


@dataclass
class _Tally:
    suppressed: int = 0
    last_logged: float = float("-inf")


@dataclass
class MalformedReporter:
    """Counts malformed input and logs it once per kind per ``interval`` seconds.

    The first occurrence of a kind is logged at once with its context; later ones within the
    interval are only counted, and the count is reported with the next line of that kind, so
    a flood of bad input cannot flood the log. One reporter per read loop or task module.
    """

    logger: logging.Logger
    interval: float = 60.0
    clock: Callable[[], float] = time.monotonic
    total: int = 0
    _tallies: dict[str, _Tally] = field(default_factory=dict)

    def report(self, exc: MalformedMessage, where: str) -> bool:
        """Count ``exc`` (seen in ``where``); returns True when a line was logged."""
        self.total += 1
        tally = self._tallies.setdefault(exc.kind, _Tally())
        now = self.clock()
        if now - tally.last_logged < self.interval:
            tally.suppressed += 1
            return False
        if tally.suppressed:
            self.logger.warning(
                "skipped malformed %s: %s; input=%s (and %d more of this kind since last logged)",
                where,
                exc,
                excerpt(exc.context),
                tally.suppressed,
            )
        else:
            self.logger.warning(
                "skipped malformed %s: %s; input=%s", where, exc, excerpt(exc.context)
            )
        tally.suppressed = 0
        tally.last_logged = now
        return True
