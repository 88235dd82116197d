"""The price stream: a read-loop unit and a batching hand-off unit sharing one buffer."""

from __future__ import annotations

import logging
from typing import Any

import msgpack
from celery import Celery

from alpaca_broker.keys import PRICES_BATCH_TASK
from alpaca_broker.recording import RecordingWriter
from alpaca_broker.settings import Settings
from producers.backoff import Backoff
from producers.buffer import EventBuffer
from producers.connection import ReconnectPolicy
from producers.handoff import BatchPolicy, Handoff
from producers.price_client import PriceStreamClient
from producers.sender import TaskSender
from producers.status import StreamStatus
from producers.stream_unit import StreamUnit
from producers.supervisor import UnitFactory

log = logging.getLogger(__name__)

PriceItem = tuple[int, dict[str, Any]]


def to_wire(msg: dict[str, Any]) -> dict[str, Any]:
    """Make a raw message JSON-safe: the msgpack Timestamp ``t`` becomes int nanoseconds."""
    t = msg.get("t")
    if isinstance(t, msgpack.Timestamp):
        msg["t"] = t.to_unix_nano()
    return msg


class PriceStream(StreamUnit):
    """Holds the StockDataStream; its handler appends to the buffer and returns."""

    def __init__(
        self,
        settings: Settings,
        status: StreamStatus,
        buffer: EventBuffer[PriceItem],
        recorder: RecordingWriter | None = None,
    ) -> None:
        super().__init__("prices", status, _reconnect_policy(settings))
        self._settings = settings
        self._buffer = buffer
        self._recorder = recorder

    def make_client(self) -> PriceStreamClient:
        client = PriceStreamClient(self._settings, self._status, self._recorder)
        client.register(
            self._settings.alpaca_data_channels, self._settings.alpaca_symbols, self.on_message
        )
        return client

    async def on_message(self, msg: dict[str, Any]) -> None:
        """The handler: hand off, never wait."""
        self._buffer.put((self._client.received_ns, msg))


def _reconnect_policy(settings: Settings) -> ReconnectPolicy:
    return ReconnectPolicy(Backoff(1.0, 30.0), settings.connection_limit_wait)


def price_units(
    settings: Settings, app: Celery, recorder: RecordingWriter | None = None
) -> dict[str, UnitFactory]:
    """The price stream's units: the read loop and its hand-off, sharing one buffer."""
    status = StreamStatus("prices")
    buffer: EventBuffer[PriceItem] = EventBuffer(status, maxlen=settings.price_buffer_size)
    sender = TaskSender(app)

    def send(batch: list[PriceItem]) -> None:
        items = [[ns, to_wire(msg)] for ns, msg in batch]
        sender.send(PRICES_BATCH_TASK, [items], argsrepr=f"[{len(items)} events]")

    policy = BatchPolicy(settings.price_batch_size, settings.price_batch_ms / 1000)
    return {
        "prices": lambda: PriceStream(settings, status, buffer, recorder),
        "prices.handoff": lambda: Handoff("prices.handoff", buffer, status, send, policy),
    }
