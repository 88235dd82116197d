"""Replays a recording (``alpaca_broker.recording``) to the connected clients.

Replay starts once a client is ready for every stream the recording holds (a subscribed
data session, a trading session listening to ``trade_updates``), then plays the frames at
the recorded pace times ``speed``, or as fast as the clients take them (``speed=None``).
Control messages (``success``, ``subscription``, ``authorization``, ``listening``, ...)
are the live session's business and are skipped. A data frame that every receiver wants
whole goes out byte for byte as recorded; otherwise its wanted messages are re-encoded.
A replayed ``trade_updates`` order also becomes the order book's state, so REST agrees.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import msgpack

from alpaca_broker.recording import RecordedFrame, RecordingReader
from simulator import codec
from simulator.codec import WireFormat
from simulator.hub import Hub
from simulator.orderbook import OrderBook

log = logging.getLogger(__name__)
_CONTROL = frozenset({"success", "error", "subscription"})


class Replayer:
    """Plays one recording once."""

    def __init__(self, hub: Hub, book: OrderBook, path: Path, speed: float | None) -> None:
        if speed is not None and speed <= 0:
            raise ValueError("replay speed must be positive (or None for as fast as possible)")
        self._hub = hub
        self._book = book
        self._frames = list(RecordingReader(path))
        self._speed = speed
        self.done = asyncio.Event()
        self.frames_played = 0

    def _clients_ready(self, streams: set[str]) -> bool:
        if "data" in streams and not self._hub.ready_data():
            return False
        return "trading" not in streams or any(
            s.listens("trade_updates") for s in self._hub.trading
        )

    async def run(self) -> None:
        """Wait for clients, then play every frame."""
        streams = {frame.stream for frame in self._frames}
        while not self._clients_ready(streams):
            await asyncio.sleep(0.02)
        log.info("replaying %d frames", len(self._frames))
        loop = asyncio.get_running_loop()
        start = loop.time()
        first = self._frames[0].ns if self._frames else 0
        for frame in self._frames:
            if self._speed is not None:
                delay = start + (frame.ns - first) / 1e9 / self._speed - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            if frame.stream == "data":
                await self._play_data(frame)
            else:
                self._play_trading(frame)
            self.frames_played += 1
        log.info("replay finished")
        self.done.set()

    async def _play_data(self, frame: RecordedFrame) -> None:
        try:
            msgs = codec.decode_frame(frame.payload)
        except (ValueError, msgpack.UnpackException):
            self._hub.push_raw(frame.payload, "data", None)  # recorded garbage stays garbage
            return
        market = [m for m in msgs if not (isinstance(m, dict) and m.get("T") in _CONTROL)]
        if not market:
            return
        stats = self._hub.stats
        for session in self._hub.ready_data():
            wanted = [m for m in market if not isinstance(m, dict) or session.subs.wants_message(m)]
            if not wanted:
                continue
            whole = len(wanted) == len(msgs) and isinstance(frame.payload, bytes)
            if whole and session.fmt is WireFormat.MSGPACK:
                out: codec.Frame = frame.payload
            else:
                out = codec.encode(wanted, session.fmt)
            if await session.outbound.put(out):
                stats.market_messages += len(wanted)
                stats.market_frames += 1

    def _play_trading(self, frame: RecordedFrame) -> None:
        try:
            message: Any = json.loads(frame.payload)
        except ValueError:
            self._hub.push_raw(frame.payload, "trading", None)
            return
        if isinstance(message, dict) and message.get("stream") == "trade_updates":
            self._book.ingest(message)
            self._hub.publish_trading(message)
