"""A producer unit that runs one stream client's connection loop on its own asyncio loop."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any

from producers.connection import ReconnectPolicy, run_connection
from producers.status import StreamStatus
from producers.unit import ProducerUnit


class StreamUnit(ProducerUnit):
    """Runs one stream client's connection loop on its own asyncio loop in this thread."""

    def __init__(self, name: str, status: StreamStatus, policy: ReconnectPolicy) -> None:
        self.name = name
        self._status = status
        self._policy = policy
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._client: Any = None
        self._stopping = threading.Event()
        self._closing: asyncio.Future[None] | None = None

    def make_client(self) -> Any:
        """Build the connected client (with handlers registered)."""
        raise NotImplementedError

    def on_connected(self) -> None:
        """Called on the loop after every (re)connect."""

    def run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        self._client = self.make_client()
        if self._stopping.is_set():
            return
        await run_connection(
            self._client, self._status, self._stop, self._policy, self.on_connected
        )

    def stop(self) -> None:
        self._stopping.set()
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nothing to stop
                self._loop.call_soon_threadsafe(self._stop_on_loop)

    def _stop_on_loop(self) -> None:
        assert self._stop is not None
        self._stop.set()
        if self._client is not None:
            self._closing = asyncio.ensure_future(self._client.close())  # wakes a pending recv()

    def snapshot(self) -> dict[str, Any]:
        return self._status.snapshot()
