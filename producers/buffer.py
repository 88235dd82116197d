"""The hand-off buffer between a stream's read loop and its sender thread."""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Generic, TypeVar

from producers.status import StreamStatus

log = logging.getLogger(__name__)

T = TypeVar("T")


class EventBuffer(Generic[T]):
    """A FIFO the read loop appends to without ever blocking.

    Bounded (``maxlen``): when full, the oldest item is dropped and counted in
    ``status.dropped`` — right for prices, where a newer price supersedes an older one.
    Unbounded (``maxlen=None``): nothing is ever dropped — right for orders — and a warning
    is logged each time the backlog doubles past ``warn_at``.
    """

    def __init__(self, status: StreamStatus, maxlen: int | None, warn_at: int = 1000) -> None:
        self._items: deque[T] = deque(maxlen=maxlen)
        self._maxlen = maxlen
        self._status = status
        self._ready = threading.Event()
        self._warn_at = warn_at

    def put(self, item: T) -> None:
        """Append ``item``; never blocks (called on the stream's event loop)."""
        items = self._items
        if self._maxlen is not None and len(items) == self._maxlen:
            self._status.dropped += 1  # deque(maxlen) evicts the oldest on append
        items.append(item)
        if len(items) >= self._warn_at and self._maxlen is None:
            log.warning(
                "%s backlog holds %d events (broker unreachable?)", self._status.name, len(items)
            )
            self._warn_at *= 2
        if not self._ready.is_set():
            self._ready.set()

    def wait(self, timeout: float) -> bool:
        """Block until an item is there (True) or ``timeout`` passes (False)."""
        if self._items:
            return True
        self._ready.clear()
        if self._items:  # appended between the check and the clear
            return True
        return self._ready.wait(timeout)

    def take(self, limit: int) -> list[T]:
        """Remove and return up to ``limit`` items, oldest first."""
        items = self._items
        taken: list[T] = []
        while items and len(taken) < limit:
            taken.append(items.popleft())
        return taken

    def __len__(self) -> int:
        return len(self._items)
