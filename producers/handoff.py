"""The hand-off thread: drains a stream's buffer into Celery tasks, in batches, in order."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from alpaca_broker.errors import is_retryable
from producers.backoff import Backoff
from producers.buffer import EventBuffer
from producers.status import StreamStatus
from producers.unit import ProducerUnit

log = logging.getLogger(__name__)

T = TypeVar("T")
Send = Callable[[list[T]], None]


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    """Flush when ``max_events`` are collected or ``max_delay`` seconds after the first one."""

    max_events: int
    max_delay: float


class Handoff(ProducerUnit, Generic[T]):
    """Takes batches from ``buffer`` and hands each to ``send`` (which publishes tasks).

    While the broker is unreachable the batch in hand is kept and retried with backoff; the
    read loop keeps filling the buffer meanwhile (a bounded one drops its oldest). Sending
    resumes by itself when the broker is back.
    """

    def __init__(
        self,
        name: str,
        buffer: EventBuffer[T],
        status: StreamStatus,
        send: Send[T],
        policy: BatchPolicy,
        backoff: Backoff | None = None,
    ) -> None:
        self.name = name
        self._buffer = buffer
        self._status = status
        self._send = send
        self._policy = policy
        self._backoff = backoff or Backoff(base=0.25, cap=5.0)
        self._stop = threading.Event()
        self._pending: list[T] = []

    def run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            if not self._pending:
                if not self._buffer.wait(0.2):
                    continue
                self._pending = self._collect()
            if self._try_send():
                failures = 0
            else:
                self._stop.wait(self._backoff.delay(failures))
                failures += 1

    def stop(self) -> None:
        self._stop.set()

    def flush(self, timeout: float) -> None:
        """Send the batch in hand and everything buffered, until done or ``timeout``."""
        deadline = time.monotonic() + timeout
        attempt = 0
        while time.monotonic() < deadline:
            if not self._pending:
                self._pending = self._buffer.take(self._policy.max_events)
                if not self._pending:
                    log.info("%s flushed", self.name)
                    return
            if not self._try_send():
                pause = min(self._backoff.delay(attempt), deadline - time.monotonic())
                time.sleep(max(0.0, pause))
                attempt += 1
        left = len(self._pending) + len(self._buffer)
        log.warning("%s: shutdown timeout with %d events unsent", self.name, left)

    def snapshot(self) -> dict[str, Any]:
        return {"buffered": len(self._buffer) + len(self._pending)}

    def _collect(self) -> list[T]:
        limit = self._policy.max_events
        batch = self._buffer.take(limit)
        deadline = time.monotonic() + self._policy.max_delay
        while len(batch) < limit and not self._stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._buffer.wait(remaining):
                break
            batch.extend(self._buffer.take(limit - len(batch)))
        return batch

    def _try_send(self) -> bool:
        try:
            self._send(self._pending)
        except Exception as exc:
            if not is_retryable(exc):
                log.exception(
                    "%s: dropping %d events that cannot be sent", self.name, len(self._pending)
                )
                self._status.dropped += len(self._pending)
                self._pending = []
                return True
            log.warning(
                "%s: broker unreachable (%s); holding %d events", self.name, exc, len(self._pending)
            )
            return False
        self._status.enqueued += len(self._pending)
        self._pending = []
        return True
