"""The order stream (alpaca-py ``TradingStream``): its read loop over ``trade_updates``.

alpaca-py supplies connect, authenticate and ``listen``; this loop stamps each frame's
receive time, hands every ``trade_updates`` data object to the sink with it, and counts
anything else it cannot use. No frame, however hostile (undecodable, nested a thousand deep,
the wrong shape), stops the loop: it is counted and skipped.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from alpaca_broker.recording import RecordingWriter
from producers.buffer import Message
from producers.clients.market import InputCounter, Sink
from producers.health import StreamStatus

log = logging.getLogger(__name__)

# The trading stream pings every 10 s; a peer that stops answering for this long is gone.
PING_TIMEOUT = 30
WEBSOCKET_PARAMS = {"ping_interval": 10, "ping_timeout": PING_TIMEOUT, "max_queue": 1024}


async def _listening(_: Any) -> None:
    """Never called: its presence makes alpaca-py send ``listen`` for trade_updates."""


class TradingStreamClient:
    """A :class:`producers.connection.StreamClient` over an alpaca-py ``TradingStream``."""

    def __init__(
        self,
        stream: Any,
        status: StreamStatus,
        sink: Sink,
        *,
        recorder: RecordingWriter | None = None,
    ) -> None:
        self._stream = stream
        self._stream._trade_updates_handler = _listening
        self.status = status
        self._sink = sink
        self._recorder = recorder
        self._malformed = InputCounter(status)

    async def open(self) -> None:
        await self._stream._start_ws()  # alpaca-py: connect, authenticate, listen

    async def consume(self) -> bool:
        status, ws = self.status, self._stream._ws
        while True:
            frame = await ws.recv()
            received_ns = time.time_ns()
            if self._recorder is not None:
                self._recorder.write("trading", frame, received_ns)
            try:
                msg = json.loads(frame)
            except (ValueError, RecursionError):
                self._malformed("undecodable frame", frame[:64])
                continue
            stream = msg.get("stream") if isinstance(msg, dict) else None
            if stream == "trade_updates":
                data = msg.get("data")
                if isinstance(data, dict) and isinstance(data.get("order"), dict):
                    status.received += 1
                    status.last_message_at = received_ns / 1e9
                    self._sink(Message(received_ns, data))
                else:
                    self._malformed("trade update without order", msg)
            elif stream in ("listening", "authorization"):
                log.info("orders stream: %s", msg.get("data"))
            elif isinstance(msg, dict) and msg.get("action") == "error":
                log.error("orders stream: Alpaca error: %s", msg.get("data"))
            else:
                self._malformed("unknown message", msg)

    async def close(self) -> None:
        await self._stream.close()
