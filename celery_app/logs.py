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
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Literal, TextIO

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
    """Replaces every known secret with ``***`` in the finished line (a last line of defence)."""

    def __init__(self, fmt: str | None, secrets: Iterable[str]) -> None:
        super().__init__(fmt)
        self._secrets = tuple(secrets)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return (
            datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        )

    def format(self, record: logging.LogRecord) -> str:
        line = self.render(record)
        for secret in self._secrets:
            line = line.replace(secret, "***")
        return line

    def render(self, record: logging.LogRecord) -> str:
        return super().format(record)


class _JsonFormatter(_Redacting):
    def render(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": self.formatTime(record),
            "level": record.levelname,
            "component": getattr(record, "component", _default_component),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["exc_info"] = self.formatException(record.exc_info)
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
    """Configure the root logger for this process (replaces any earlier setup)."""
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
