"""alpaca-py's StockDataStream with a read loop that decodes once, stamps and counts."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from alpaca.data.live.stock import StockDataStream

from alpaca_broker.errors import MalformedMessage
from alpaca_broker.logs import MalformedReporter
from alpaca_broker.recording import RecordingWriter
from alpaca_broker.settings import DataChannel, Settings
from producers.frames import parse_frame
from producers.status import StreamStatus

log = logging.getLogger(__name__)

# Our channel names -> alpaca-py's handler tables (0.44 has no subscribe_lulds, so the
# handlers are registered in the tables directly, the same way subscribe_* does).
HANDLER_TABLES: Mapping[DataChannel, tuple[str, ...]] = {
    "trades": ("trades", "corrections", "cancelErrors"),  # corrections, cancels come with trades
    "quotes": ("quotes",),
    "bars": ("bars",),
    "updated_bars": ("updatedBars",),
    "daily_bars": ("dailyBars",),
    "statuses": ("statuses",),
    "lulds": ("lulds",),
}
_IMPLIED = ("corrections", "cancelErrors")  # Alpaca implies these; never sent in subscribe
_FATAL_STREAM_ERRORS = ("insufficient subscription", "auth failed")


class PriceStreamClient(StockDataStream):  # type: ignore[misc]
    """StockDataStream whose read loop decodes each frame once, stamps its receive time,
    counts malformed input and dispatches well-formed messages to the registered handlers."""

    def __init__(
        self, settings: Settings, status: StreamStatus, recorder: RecordingWriter | None = None
    ) -> None:
        key, secret = settings.credentials()
        super().__init__(
            key,
            secret,
            raw_data=True,
            feed=settings.alpaca_feed,
            url_override=settings.data_stream_url,
        )
        self.status = status
        self.received_ns = 0
        self._data_timeout = settings.data_timeout or None
        self._reporter = MalformedReporter(log, interval=10.0)
        self._recorder = recorder

    def register(
        self, channels: tuple[DataChannel, ...], symbols: tuple[str, ...], handler: Any
    ) -> None:
        """Route every message of ``channels`` for ``symbols`` to ``handler``."""
        for channel in channels:
            for table in HANDLER_TABLES[channel]:
                targets = ("*",) if table in _IMPLIED else symbols
                self._handlers[table].update(dict.fromkeys(targets, handler))

    async def open(self) -> None:
        await self._start_ws()
        await self._send_subscribe_msg()

    async def consume(self) -> bool:
        loop = asyncio.get_running_loop()
        status, ws = self.status, self._ws
        data_seen = False
        last_data = loop.time()
        while True:
            if self._data_timeout is None:
                frame = await ws.recv()
            else:
                remaining = self._data_timeout - (loop.time() - last_data)
                try:
                    frame = await asyncio.wait_for(ws.recv(), max(remaining, 0.001))
                except TimeoutError:
                    log.warning(
                        "prices stream: no market data for %.0fs; reconnecting", self._data_timeout
                    )
                    return data_seen
            self.received_ns = time.time_ns()
            if self._recorder is not None:
                self._recorder.write("data", frame, self.received_ns)
            parsed = parse_frame(frame)
            for reason, context in parsed.malformed:
                self._malformed_input(reason, context)
            for msg in parsed.control:
                if msg.get("T") == "error":
                    self._on_error(msg)
                else:
                    await self._dispatch(msg)  # alpaca-py logs the subscription
            if parsed.market:
                status.received += len(parsed.market)
                data_seen = True
                last_data = loop.time()
                status.last_message_at = self.received_ns / 1e9
                for msg in parsed.market:
                    await self._dispatch(msg)  # alpaca-py routes it to the registered handler

    def _on_error(self, msg: dict[str, Any]) -> None:
        text = str(msg.get("msg", ""))
        log.error("prices stream: Alpaca error %s: %s", msg.get("code"), text)
        if any(t in text for t in _FATAL_STREAM_ERRORS):
            raise ValueError(text)  # the connection loop turns this into exit code 3

    def _malformed_input(self, reason: str, context: object) -> None:
        self.status.malformed += 1
        self._reporter.report(MalformedMessage(reason, "", context), f"{self.status.name} frame")

    async def close(self) -> None:
        await super().close()
