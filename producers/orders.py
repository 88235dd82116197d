"""The order stream: a read-loop unit, an in-order hand-off unit and the reconciler."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery import Celery

from alpaca_broker.keys import ORDER_EVENT_TASK
from alpaca_broker.recording import RecordingWriter
from alpaca_broker.settings import Settings
from producers.backoff import Backoff
from producers.buffer import EventBuffer
from producers.connection import ReconnectPolicy
from producers.handoff import BatchPolicy, Handoff
from producers.order_client import OrderStreamClient
from producers.sender import TaskSender
from producers.status import StreamStatus
from producers.stream_unit import StreamUnit
from producers.supervisor import UnitFactory

log = logging.getLogger(__name__)

OrderItem = tuple[int, dict[str, Any], str]  # (received_at_ns, trade update data, source)


class OrderStream(StreamUnit):
    """Holds the TradingStream; its handler appends to the (unbounded) buffer and returns."""

    def __init__(
        self,
        settings: Settings,
        status: StreamStatus,
        buffer: EventBuffer[OrderItem],
        on_connected: Callable[[], None],
        recorder: RecordingWriter | None = None,
    ) -> None:
        policy = ReconnectPolicy(Backoff(1.0, 30.0), settings.connection_limit_wait)
        super().__init__("orders", status, policy)
        self._settings = settings
        self._buffer = buffer
        self._connected_hook = on_connected
        self._recorder = recorder

    def make_client(self) -> OrderStreamClient:
        return OrderStreamClient(self._settings, self._status, self.on_update, self._recorder)

    def on_connected(self) -> None:
        # Alpaca does not replay what happened while the socket was down.
        self._connected_hook()

    async def on_update(self, data: dict[str, Any]) -> None:
        """The handler: hand off, never wait."""
        self._buffer.put((self._client.received_ns, data, "stream"))


def order_sender(sender: TaskSender) -> Callable[[list[OrderItem]], None]:
    """One task per event, in arrival order (batches are of one)."""

    def send(batch: list[OrderItem]) -> None:
        for received_ns, data, source in batch:
            sender.send(ORDER_EVENT_TASK, [data, received_ns, source])

    return send


def order_units(
    settings: Settings, app: Celery, recorder: RecordingWriter | None = None
) -> dict[str, UnitFactory]:
    """The order stream's units, sharing one buffer that never drops."""
    from producers.reconciler import Reconciler

    status = StreamStatus("orders")
    buffer: EventBuffer[OrderItem] = EventBuffer(status, maxlen=None)
    reconciler = Reconciler(settings, buffer)
    send = order_sender(TaskSender(app))
    return {
        "orders": lambda: OrderStream(settings, status, buffer, reconciler.trigger, recorder),
        "orders.handoff": lambda: Handoff(
            "orders.handoff", buffer, status, send, BatchPolicy(1, 0)
        ),
        "orders.reconciler": lambda: reconciler,
    }
