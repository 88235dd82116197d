"""Connection lifecycle of every stream: connect, read, reconnect, in a thread of its own.

alpaca-py's own ``run()`` retries rejected credentials forever and returns silently on
``insufficient subscription``; :func:`run_connection` uses alpaca-py's protocol steps
(connect, auth, subscribe) through a :class:`StreamClient` but owns the lifecycle, so those
cases stop the producer (exit 3), a 406 waits out Alpaca's reaping window, and every other
failure backs off with jitter. :class:`StreamUnit` runs that loop on its own asyncio loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import websockets

from alpaca_broker.errors import CredentialsRejected
from producers.health import StreamStatus
from producers.supervisor import Backoff, ProducerUnit

log = logging.getLogger(__name__)

Failure = Literal["rejected", "connection_limit", "retry"]

# Texts alpaca-py raises (ValueError) when Alpaca answers auth with an error.
_REJECTED = (
    "auth failed",
    "insufficient subscription",
    "failed to authenticate",
    "insufficient scope",
)
_LIMIT = ("connection limit exceeded",)


def classify(exc: BaseException) -> Failure:
    """What a failed connect/auth means: stop for good, wait out the reaping window, or retry."""
    text = str(exc).lower()
    if isinstance(exc, ValueError) and any(t in text for t in _REJECTED):
        return "rejected"
    if any(t in text for t in _LIMIT):
        return "connection_limit"
    return "retry"


class StreamClient(Protocol):
    """What the loop needs from a stream client."""

    async def open(self) -> None:
        """Connect, authenticate and subscribe; raise on failure."""

    async def consume(self) -> bool:
        """Read until the socket closes or goes stale; True when market data was seen."""

    async def close(self) -> None:
        """Close the socket if open."""


@dataclass(frozen=True)
class ReconnectPolicy:
    """How long to wait before connecting again (one policy for every stream)."""

    backoff: Backoff = field(default_factory=lambda: Backoff(base=1.0, cap=30.0))
    # Alpaca allows one connection per key and endpoint and reaps a half-dead one after
    # about 90 s; reconnecting sooner only earns more 406s.
    connection_limit_wait: float = 90.0
    open_timeout: float = 15.0
    slot_freed: Callable[[int], bool] | None = None
    """``slot_freed(refused_at_ns)``: polled during a 406 wait; True when the holder of the
    slot has since closed its socket cleanly (``producers.handover``): connect at once."""


async def run_connection(
    client: StreamClient,
    status: StreamStatus,
    stop: asyncio.Event,
    policy: ReconnectPolicy,
    on_connected: Callable[[], None] | None = None,
) -> None:
    """Keep ``client`` connected until ``stop`` is set; raises CredentialsRejected."""
    attempt = 0
    connected_before = False
    while not stop.is_set():
        status.set_state("connecting")
        try:
            # alpaca-py waits forever for the welcome and the auth reply; we do not.
            await asyncio.wait_for(client.open(), policy.open_timeout)
        except Exception as exc:
            await client.close()
            failure = classify(exc)
            if failure == "rejected":
                status.set_state("auth_failed")
                raise CredentialsRejected(f"{status.name} stream: Alpaca rejected: {exc}") from None
            limited = failure == "connection_limit"
            if limited:
                delay = policy.connection_limit_wait * random.uniform(1.0, 1.1)
            else:
                delay = policy.backoff.delay(attempt)
            attempt += 1
            status.set_state("disconnected")
            log.warning(
                "%s stream: connect failed (%s); retrying in %.1fs",
                status.name,
                _describe(exc),
                delay,
            )
            if limited and policy.slot_freed is not None:
                await _wait_for_slot(stop, delay, policy.slot_freed, time.time_ns(), status.name)
            else:
                await _wait(stop, delay)
            continue
        if connected_before:
            status.reconnects += 1
        connected_before = True
        status.set_state("connected")
        if on_connected:
            on_connected()
        try:
            data_seen = await client.consume()
        except websockets.WebSocketException as exc:
            data_seen = False
            if not stop.is_set():
                log.warning("%s stream: connection lost (%s)", status.name, _describe(exc))
        except ValueError as exc:  # an error message from Alpaca mid-stream
            if classify(exc) == "rejected":
                status.set_state("auth_failed")
                raise CredentialsRejected(f"{status.name} stream: Alpaca rejected: {exc}") from None
            raise
        finally:
            await client.close()
        if stop.is_set():
            break
        attempt = 0 if data_seen else attempt
        delay = policy.backoff.delay(attempt)
        attempt += 1
        status.set_state("disconnected")
        log.info("%s stream: reconnecting in %.1fs", status.name, delay)
        await _wait(stop, delay)
    status.set_state("stopped")


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


SLOT_POLL_S = 0.5


async def _wait_for_slot(
    stop: asyncio.Event,
    seconds: float,
    freed: Callable[[int], bool],
    refused_at_ns: int,
    name: str,
) -> None:
    """Wait out a 406 window, ending early when ``freed`` says the slot's holder let go."""
    deadline = time.monotonic() + seconds
    while not stop.is_set():
        left = deadline - time.monotonic()
        if left <= 0:
            return
        await _wait(stop, min(SLOT_POLL_S, left))
        if freed(refused_at_ns):
            log.info("%s stream: the previous holder closed its socket; connecting now", name)
            return


@dataclass(eq=False)
class StreamUnit(ProducerUnit):
    """Runs one stream client's connection loop on its own asyncio loop in this thread.

    ``make_client`` builds a fresh client per run (a restart after a crash gets a new one);
    ``on_connected`` runs on the loop after every (re)connect (the order stream triggers a
    reconciliation there: Alpaca replays nothing).
    """

    name: str
    status: StreamStatus
    policy: ReconnectPolicy
    make_client: Callable[[], StreamClient]
    on_connected: Callable[[], None] | None = None
    _loop: asyncio.AbstractEventLoop | None = field(default=None, init=False)
    _stop: asyncio.Event | None = field(default=None, init=False)
    _client: StreamClient | None = field(default=None, init=False)
    _stopping: threading.Event = field(default_factory=threading.Event, init=False)
    _closing: asyncio.Future[None] | None = field(default=None, init=False)

    def run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        self._client = self.make_client()
        if self._stopping.is_set():
            return
        await run_connection(self._client, self.status, self._stop, self.policy, self.on_connected)

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
        return self.status.snapshot()
