"""The order hand-off confirmed by a replica: a task message counts as handed off only when
a replica has it (``alpaca_broker.replication``), so a failover cannot lose it."""

from __future__ import annotations

from alpaca_broker.keys import Keys
from alpaca_broker.redis_client import connect
from alpaca_broker.replication import ReplicaWait
from alpaca_broker.settings import Settings
from producers.buffer import Message
from producers.handoff import Send


def replicated(send: Send[Message], settings: Settings) -> Send[Message]:
    """``send``, then a marker write and ``WAIT`` on the broker's primary.

    A failed marker raises (a retryable Redis error): the hand-off keeps the batch and sends
    it again, a duplicate task that the workers' dedupe turns into nothing. With a broker
    elsewhere (``CELERY_BROKER_URL`` naming another Redis: ``Settings.broker_is_output``) or
    ``ORDER_REPLICA_WAIT_MS=0``, ``send`` as it is.
    """
    # The marker covers the task only when both are on the same Redis (one replication stream).
    if settings.order_replica_wait_ms <= 0 or not settings.broker_is_output:
        return send
    waiter = ReplicaWait(
        connect(settings, socket_timeout=10, socket_connect_timeout=5),
        settings.order_replica_wait_ms,
    )
    key = Keys(settings.redis_key_prefix).orders_handoff_marker

    def send_replicated(batch: list[Message]) -> None:
        send(batch)
        waiter.marker(key, f"hand-off of {len(batch)} order task(s)")

    return send_replicated
