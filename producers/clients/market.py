"""The read loop of every alpaca-py market-data stream: check, stamp, count, hand off frames.

alpaca-py's ``DataStream`` supplies the protocol steps (connect, authenticate) and closing;
this loop replaces its ``_consume``/``_dispatch``. Per-frame, not per-message, work: a frame
whose messages are all well-formed market data (:func:`producers.frames.clean_count`, the
common case) goes to the stream's sink (the hand-off buffer) as it came off the socket, one
:class:`producers.frames.Frame` stamped with the time it was read; the workers decode and
normalize it in parallel. Any other frame (control messages, malformed input) takes the slow
path: :func:`producers.frames.parse_frame`, control handled here, malformed counted here,
and the well-formed rest re-packed into one frame. Handlers never wait: the sink only appends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import msgpack

from alpaca_broker.errors import MalformedMessage
from alpaca_broker.logs import MalformedReporter
from alpaca_broker.recording import RecordingWriter
from producers.buffer import Message
from producers.frames import Frame, clean_count, parse_frame, wire_models
from producers.health import StreamStatus

log = logging.getLogger(__name__)

Sink = Callable[[Message], object]
"""Where a stream's messages go: its hand-off buffer's ``put`` (never blocks)."""

# Alpaca error texts after which reconnecting cannot help: the producer stops (exit 3).
_FATAL_STREAM_ERRORS = ("insufficient subscription", "auth failed")


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
    ) -> None:
        self._stream = stream
        self._subscription = {"action": "subscribe", **subscription}
        self._required = required
        self._wire = wire_models(required)
        self.status = status
        self._sink = sink
        self._silence = silence_timeout
        self._recorder = recorder
        self._record_as = record_as
        self._malformed = InputCounter(status)

    async def open(self) -> None:
        await self._stream._start_ws()  # alpaca-py: connect, read `connected`, authenticate
        await self._stream._ws.send(msgpack.packb(self._subscription))

    async def consume(self) -> bool:
        loop = asyncio.get_running_loop()
        status, ws, sink, wire = self.status, self._stream._ws, self._sink, self._wire
        data_seen = False
        last_data = loop.time()
        while True:
            if self._silence is None:
                frame = await ws.recv()
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
        if kind == "subscription":
            channels = {k: v for k, v in msg.items() if k != "T" and v}
            log.info("%s stream: subscribed to %s", self.status.name, channels)
        elif kind == "error":
            text = str(msg.get("msg", ""))
            log.error("%s stream: Alpaca error %s: %s", self.status.name, msg.get("code"), text)
            if any(t in text for t in _FATAL_STREAM_ERRORS):
                raise ValueError(text)  # the connection loop turns this into exit code 3

    async def close(self) -> None:
        await self._stream.close()
