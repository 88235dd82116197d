"""The buffer between a stream's read loop and its hand-off thread.

The read loop must never wait on Redis, so each message goes into an :class:`EventBuffer`
(with its receive time, as a :class:`Message`) without blocking; the hand-off
(:mod:`producers.handoff`) takes batches from it. :func:`weight` counts a :class:`Frame` as
the market messages it holds, for the bounds and the counters.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections import deque
from typing import Any, Generic, NamedTuple, TypeVar

from producers.frames import Frame
from producers.health import StreamStatus

log = logging.getLogger(__name__)

T = TypeVar("T")


class Message(NamedTuple):
    """One message on its way to Celery: when it was read, what it is, where it came from.

    ``received_ns`` is stamped by the read loop when the frame came off the socket (the
    contract's ``received_at``); ``source`` is ``stream``, or ``reconciliation`` for an order
    state recovered through REST.
    """

    received_ns: int
    payload: Any
    source: str = "stream"


def weight(item: object) -> int:
    """How many market messages ``item`` stands for: a :class:`Frame` its count, else 1."""
    payload = getattr(item, "payload", None)
    return payload.messages if type(payload) is Frame else 1


class EventBuffer(Generic[T]):
    """A FIFO the read loop appends to without ever blocking.

    Bounded (``maxlen`` messages; a :class:`Frame` counts as its messages): when full, the
    oldest items are dropped and counted in ``status.dropped`` — right for prices, where a
    newer price supersedes an older one. Unbounded (``maxlen=None``): nothing is ever
    dropped — right for orders — and a warning is logged each time the backlog doubles past
    ``warn_at``.
    """

    def __init__(self, status: StreamStatus, maxlen: int | None, warn_at: int = 1000) -> None:
        self._items: deque[T] = deque()
        self._maxlen = maxlen
        self._status = status
        self._ready = threading.Event()
        self._warn_at = warn_at
        # Messages in, out and evicted; each counter has one writer thread (no lock needed:
        # every popleft is atomic, so each item is counted once, by whoever popped it).
        self._put = self._taken = self._evicted = 0
        # Sequence numbers of items (not messages): the n-th item put is still in the buffer
        # while fewer than n were taken (itertools.count is atomic under the GIL: the read
        # loop and the reconciler both put into the order buffer).
        self._puts = itertools.count(1)
        self._items_taken = 0

    def put(self, item: T) -> int:
        """Append ``item``; never blocks (called on the stream's event loop). Returns its
        sequence number, for :meth:`holds`."""
        seq = next(self._puts)
        items = self._items
        items.append(item)
        self._put += weight(item)
        if self._maxlen is not None:
            while len(self) > self._maxlen and len(items) > 1:
                try:
                    evicted = weight(items.popleft())
                except IndexError:  # taken meanwhile by the hand-off thread
                    break
                self._evicted += evicted
                self._status.dropped += evicted
        elif len(self) >= self._warn_at:
            log.warning(
                "%s backlog holds %d events (broker unreachable?)", self._status.name, len(self)
            )
            self._warn_at *= 2
        if not self._ready.is_set():
            self._ready.set()
        return seq

    def holds(self, seq: int) -> bool:
        """Whether the item put as number ``seq`` has not been taken yet (approximately, when
        two threads race to put: then an item may be put once more, which is harmless)."""
        return self._items_taken < seq

    def wait(self, timeout: float) -> bool:
        """Block until an item is there (True) or ``timeout`` passes (False)."""
        if self._items:
            return True
        self._ready.clear()
        if self._items:  # appended between the check and the clear
            return True
        return self._ready.wait(timeout)

    def take(self, limit: int) -> list[T]:
        """Remove and return items worth up to ``limit`` messages (at least one), oldest first."""
        items = self._items
        taken: list[T] = []
        count = 0
        while count < limit:
            try:
                item = items.popleft()
            except IndexError:
                break
            taken.append(item)
            count += weight(item)
        self._taken += count
        self._items_taken += len(taken)
        return taken

    def __len__(self) -> int:
        """Messages held (a frame counts as its messages)."""
        return self._put - self._taken - self._evicted
