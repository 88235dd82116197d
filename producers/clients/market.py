"""The read loop of every alpaca-py market-data stream: check, stamp, count, hand off frames.

alpaca-py's ``DataStream`` supplies the protocol steps (connect, authenticate) and closing;
this loop replaces its ``_consume``/``_dispatch``. Per-frame, not per-message, work: a frame
whose messages are all well-formed market data (:func:`producers.frames.clean_count`, the
common case) goes to the stream's sink (the hand-off buffer) as it came off the socket, one
:class:`producers.frames.Frame` stamped with the time it was read; the workers decode and
normalize it in parallel. Any other frame (control messages, malformed input) takes the slow
path: :func:`producers.frames.parse_frame`, control handled here, malformed counted here,
and the well-formed rest re-packed into one frame. Handlers never wait: the sink only appends.

The subscription is the stream's universe (``producers.universe``): sent after auth in
messages of at most 1,000 symbols, then changed at run time by a task on the same loop that
sends ``subscribe``/``unsubscribe`` messages on the live socket (alpaca-py's own
``subscribe_*`` would deadlock here). Alpaca's ``subscription`` replies and its refusals
(405, 409, 410, ...) are read by this loop and kept in the stream's subscription book; a
refusal never closes the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import msgpack
import websockets

from alpaca_broker.errors import MalformedMessage
from alpaca_broker.logs import MalformedReporter
from alpaca_broker.recording import RecordingWriter
from alpaca_broker.universe import refusal_line
from producers.buffer import Message
from producers.frames import Frame, clean_count, control_error, parse_frame, wire_models
from producers.health import StreamStatus
from producers.universe import (
    REFUSAL_CODES,
    REPLY_TIMEOUT,
    Request,
    StreamUniverse,
    SubscriptionBook,
    entries,
)

log = logging.getLogger(__name__)

Sink = Callable[[Message], object]
"""Where a stream's messages go: its hand-off buffer's ``put`` (never blocks)."""

# Alpaca error texts after which reconnecting cannot help: the producer stops (exit 3).
# (409 insufficient subscription stops it at auth, producers.connection; after auth, it
# refuses a subscribe message and the stream stays up.)
_FATAL_STREAM_ERRORS = ("auth failed",)

MARKET_WEBSOCKET_PARAMS: Mapping[str, Any] = {
    "ping_interval": 10,
    "ping_timeout": 180,
    "max_queue": 1024,
    "max_size": 2**25,
}
"""alpaca-py's websocket settings for the market-data streams, with a larger ``max_size``
(websockets' default is 1 MiB): Alpaca's ``subscription`` reply lists the whole set, about
20 bytes a symbol and channel, and must fit in one message (32 MiB: about 500,000 OCC
contracts on two channels)."""
UNIVERSE_READ_S = 2.0
"""Seconds a connect waits for the universe from Redis before subscribing the last known."""
SYNC_POLL_S = 1.0
"""Seconds between checks of the messages in flight (for :data:`REPLY_TIMEOUT`)."""


class InputCounter:
    """Counts a stream's malformed input in its status and logs it, rate-limited."""

    def __init__(self, status: StreamStatus) -> None:
        self.status = status
        self._reporter = MalformedReporter(log, interval=10.0)

    def __call__(self, reason: str, context: object) -> None:
        self.status.malformed += 1
        self._reporter.report(MalformedMessage(reason, "", context), f"{self.status.name} frame")


class MarketDataClient:
    """A :class:`producers.connection.StreamClient` over an alpaca-py ``DataStream``."""

    def __init__(
        self,
        stream: Any,
        subscription: Mapping[str, list[str]],
        required: Mapping[str, frozenset[str]],
        status: StreamStatus,
        sink: Sink,
        *,
        silence_timeout: float | None,
        recorder: RecordingWriter | None = None,
        record_as: str = "data",
        universe: StreamUniverse | None = None,
    ) -> None:
        self._stream = stream
        # Without a universe read from Redis: the kind's subscription, fixed.
        self._universe = universe or StreamUniverse.of(status.name, subscription, None)
        self._book = SubscriptionBook(self._universe.channels)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._dirty = False
        self._listener = self._changed_from_any_thread  # one bound method, to detach it
        self._syncer: asyncio.Task[None] | None = None
        self._required = required
        self._wire = wire_models(required)
        self.status = status
        self._sink = sink
        self._silence = silence_timeout
        self._recorder = recorder
        self._record_as = record_as
        self._malformed = InputCounter(status)

    async def open(self) -> None:
        universe = self._universe
        # The universe as it stands now (after a restart or a takeover too); the last known
        # one when Redis cannot be read in time (the watcher applies it once it can).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.to_thread(universe.refresh), UNIVERSE_READ_S)
        await self._stream._start_ws()  # alpaca-py: connect, read `connected`, authenticate
        loop = self._loop = asyncio.get_running_loop()
        self._wake, self._dirty = asyncio.Event(), False
        self._book = universe.book = SubscriptionBook(universe.channels)
        universe.attach(self._listener)  # a change from now on is not lost
        for request in self._book.plan(universe.desired, initial=True, now=loop.time()):
            await self._send(request)

    async def consume(self) -> bool:
        self._syncer = asyncio.create_task(self._sync(), name=f"{self.status.name}.subscriptions")
        try:
            return await self._read()
        finally:
            await self._stop_syncer()

    async def _read(self) -> bool:
        loop = asyncio.get_running_loop()
        status, ws, sink, wire = self.status, self._stream._ws, self._sink, self._wire
        universe = self._universe
        data_seen = False
        last_data = loop.time()
        while True:
            if self._silence is None or not universe.desired:
                frame = await ws.recv()
                last_data = loop.time()  # nothing is expected: the silence clock starts now
            else:
                remaining = self._silence - (loop.time() - last_data)
                try:
                    frame = await asyncio.wait_for(ws.recv(), max(remaining, 0.001))
                except TimeoutError:
                    log.warning(
                        "%s stream: no market data for %.0fs; reconnecting",
                        status.name,
                        self._silence,
                    )
                    return data_seen
            received_ns = time.time_ns()
            if self._recorder is not None:
                self._recorder.write(self._record_as, frame, received_ns)
            # The fast path: a clean frame is handed off whole, its bytes untouched.
            count = clean_count(frame, wire) if type(frame) is bytes else -1
            if count > 0:
                payload: Frame | None = Frame(frame, count)
            else:
                payload = self._slow_path(frame)
                count = payload.messages if payload else 0
            if payload:
                status.received += count
                data_seen = True
                last_data = loop.time()
                status.last_message_at = received_ns / 1e9
                sink(Message(received_ns, payload))

    def _slow_path(self, frame: bytes | str) -> Frame | None:
        """A frame with control messages or malformed input: handle and count those here,
        and return its well-formed market messages as one frame (None when there are none)."""
        parsed = parse_frame(frame, self._required)
        for reason, context in parsed.malformed:
            self._malformed(reason, context)
        for msg in parsed.control:
            self._on_control(msg)
        if not parsed.market:
            return None
        return Frame(msgpack.packb(parsed.market), len(parsed.market))

    def _on_control(self, msg: dict[str, Any]) -> None:
        kind = msg.get("T")
        book = self._book
        if kind == "subscription":
            book.on_subscription(msg)
            if not book.pending:  # a round's last reply (or one nobody asked for)
                counts = ", ".join(f"{ch} {len(v)}" for ch, v in book.confirmed.items())
                log.info("%s stream: Alpaca confirmed %s", self.status.name, counts)
            self._replied()
        elif kind == "error":
            code, text = control_error(msg)
            if code in REFUSAL_CODES:
                refused = book.on_error(code, text)
                log.error(
                    "%s stream: %s; the stream stays connected, the symbols already "
                    "subscribed keep flowing",
                    self.status.name,
                    refusal_line(refused),
                )
                self._replied()
                return
            log.error("%s stream: Alpaca error %s: %s", self.status.name, code, text)
            if any(t in text for t in _FATAL_STREAM_ERRORS):
                raise ValueError(text)  # the connection loop turns this into exit code 3

    # --- the universe at run time (on this loop) ---

    def _changed_from_any_thread(self, commanded: bool) -> None:
        """The watcher read a new universe (a command asked, when ``commanded``)."""
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._changed, commanded)

    def _changed(self, commanded: bool) -> None:
        if commanded:
            self._book.clear_refusals()
        self._dirty = True
        if self._wake is not None:
            self._wake.set()

    def _replied(self) -> None:
        """A reply came: once none is awaited, compare again (a change may have come
        meanwhile), and have the bars of symbols added at run time backfilled."""
        if self._book.pending:
            return
        if self._book.take_added_bars() and self._universe.on_added is not None:
            self._universe.on_added()
        self._dirty = True
        if self._wake is not None:
            self._wake.set()

    async def _sync(self) -> None:
        """Apply the desired universe on the live socket whenever it changed, one round of
        messages at a time (the next once Alpaca answered every message of the last)."""
        wake, book, universe = self._wake, self._book, self._universe
        assert wake is not None
        loop = asyncio.get_running_loop()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), SYNC_POLL_S)
            wake.clear()
            if book.pending:
                expired = book.expire(loop.time(), REPLY_TIMEOUT)
                if not expired:
                    continue
                log.warning(
                    "%s stream: no reply from Alpaca to %d subscription message(s) in %.0fs; "
                    "comparing again",
                    self.status.name,
                    len(expired),
                    REPLY_TIMEOUT,
                )
                self._dirty = True
            if not self._dirty:
                continue
            self._dirty = False
            try:
                await self._apply(book.plan(universe.desired, initial=False, now=loop.time()))
            except websockets.ConnectionClosed:
                return  # the read loop sees it too, and reconnects
            except Exception:  # never let a change end the task: the next one is tried anew
                log.exception("%s stream: applying the universe failed", self.status.name)
                book.expire(loop.time(), -1.0)
                self._dirty = True

    async def _apply(self, requests: list[Request]) -> None:
        if not requests:
            return
        added = sum(entries(r.message) for r in requests if r.action == "subscribe")
        removed = sum(entries(r.message) for r in requests if r.action == "unsubscribe")
        log.info(
            "%s stream: universe changed: subscribing %d and unsubscribing %d "
            "(symbol x channel) in %d message(s)",
            self.status.name,
            added,
            removed,
            len(requests),
        )
        for request in requests:
            await self._send(request)

    async def _send(self, request: Request) -> None:
        await self._stream._ws.send(msgpack.packb(request.message))

    async def _stop_syncer(self) -> None:
        syncer, self._syncer = self._syncer, None
        if syncer is None:
            return
        syncer.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await syncer

    async def close(self) -> None:
        self._universe.detach(self._listener)
        if self._universe.book is self._book:
            self._universe.book = None
        await self._stop_syncer()
        await self._stream.close()
