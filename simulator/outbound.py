"""A connection's bounded outbound queue, drained by its own writer task.

The real server buffers per connection and disconnects a client whose buffer fills (407).
websockets would otherwise buffer without bound, so the queue bound is what makes a slow
client visible. Control frames skip the bound; ``put`` waits for room instead of failing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from simulator.codec import Frame

log = logging.getLogger(__name__)


class Outbound:
    """Frames waiting to be written to one connection."""

    def __init__(self, ws: ServerConnection, limit: int, on_overflow: Callable[[], None]) -> None:
        self._ws = ws
        self.limit = limit
        self._on_overflow = on_overflow
        self._frames: deque[Frame] = deque()
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._task: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None
        self._finishing = False
        #: A silent connection stays open (pings are still answered) but gets no frames.
        self.silent = False
        self.closed = False

    def start(self) -> None:
        """Start the writer task."""
        self._task = asyncio.get_running_loop().create_task(self._write())

    @property
    def accepting(self) -> bool:
        """Whether frames offered now can be written."""
        return not (self.closed or self.silent or self._finishing)

    def offer(self, frame: Frame, *, control: bool = False) -> bool:
        """Queue ``frame`` unless the connection is closed or silent. A data frame that finds
        the queue full calls the overflow handler instead and returns False."""
        if not self.accepting:
            return False
        if not control and len(self._frames) >= self.limit:
            self._on_overflow()
            return False
        self._frames.append(frame)
        self._ready.set()
        return True

    async def put(self, frame: Frame) -> bool:
        """Queue ``frame``, waiting for room (backpressure instead of a 407)."""
        while self.accepting and len(self._frames) >= self.limit:
            self._room.clear()
            await self._room.wait()
        return self.offer(frame)

    def finish(self, last: Frame, code: int, reason: str, grace: float = 1.0) -> None:
        """Drop what is queued, write ``last``, then close with ``code``; abort the TCP
        connection if that has not happened within ``grace`` seconds."""
        self._frames.clear()
        self._frames.append(last)
        self._finishing = True
        self._ready.set()
        loop = asyncio.get_running_loop()
        self._closer = loop.create_task(self._close_after_last(code, reason))
        loop.call_later(grace, self.abort)

    async def _close_after_last(self, code: int, reason: str) -> None:
        while self._frames and not self.closed:
            self._room.clear()
            await self._room.wait()
        with contextlib.suppress(ConnectionClosed):
            await self._ws.close(code, reason)

    def abort(self) -> None:
        """Drop the TCP connection without a close frame."""
        if self._ws.transport is not None and not self._ws.transport.is_closing():
            self._ws.transport.abort()

    async def _write(self) -> None:
        try:
            while True:
                while not self._frames:
                    self._ready.clear()
                    await self._ready.wait()
                frame = self._frames.popleft()
                if not self._frames or len(self._frames) < self.limit:
                    self._room.set()
                await self._ws.send(frame)
        except ConnectionClosed:
            pass
        finally:
            self.closed = True
            self._frames.clear()
            self._room.set()

    async def stop(self) -> None:
        """Stop the writer (the connection is over)."""
        self.closed = True
        self._room.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
