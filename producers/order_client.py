"""alpaca-py's TradingStream with a read loop that stamps, counts and dispatches each update."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from alpaca.trading.stream import TradingStream

from alpaca_broker.errors import MalformedMessage
from alpaca_broker.logs import MalformedReporter
from alpaca_broker.recording import RecordingWriter
from alpaca_broker.settings import Settings
from producers.status import StreamStatus

log = logging.getLogger(__name__)

# The trading stream pings every 10 s; a peer that stops answering for this long is gone.
PING_TIMEOUT = 30


class OrderStreamClient(TradingStream):  # type: ignore[misc]
    """TradingStream whose ``consume`` hands every ``trade_updates`` data object to ``handler``."""

    def __init__(
        self,
        settings: Settings,
        status: StreamStatus,
        handler: Callable[[dict[str, Any]], Awaitable[None]],
        recorder: RecordingWriter | None = None,
    ) -> None:
        key, secret = settings.credentials()
        super().__init__(
            key,
            secret,
            paper=settings.alpaca_paper,
            raw_data=True,
            url_override=settings.trading_stream_url,
            websocket_params={"ping_interval": 10, "ping_timeout": PING_TIMEOUT, "max_queue": 1024},
        )
        self.status = status
        self.received_ns = 0
        self._handler = handler
        self._trade_updates_handler = handler  # makes _start_ws send `listen`
        self._reporter = MalformedReporter(log, interval=10.0)
        self._recorder = recorder

    async def open(self) -> None:
        await self._start_ws()

    async def consume(self) -> bool:
        status, ws = self.status, self._ws
        while True:
            frame = await ws.recv()
            self.received_ns = time.time_ns()
            if self._recorder is not None:
                self._recorder.write("trading", frame, self.received_ns)
            try:
                msg = json.loads(frame)
            except ValueError:
                self._malformed_input("undecodable frame", frame[:64])
                continue
            stream = msg.get("stream") if isinstance(msg, dict) else None
            if stream == "trade_updates":
                data = msg.get("data")
                if isinstance(data, dict) and isinstance(data.get("order"), dict):
                    status.received += 1
                    status.last_message_at = self.received_ns / 1e9
                    await self._handler(data)
                else:
                    self._malformed_input("trade update without order", msg)
            elif stream in ("listening", "authorization"):
                log.info("orders stream: %s", msg.get("data"))
            elif isinstance(msg, dict) and msg.get("action") == "error":
                log.error("orders stream: Alpaca error: %s", msg.get("data"))
            else:
                self._malformed_input("unknown message", msg)

    def _malformed_input(self, reason: str, context: object) -> None:
        self.status.malformed += 1
        self._reporter.report(MalformedMessage(reason, "", context), f"{self.status.name} frame")

    async def close(self) -> None:
        await super().close()
