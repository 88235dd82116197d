"""Consume order events exactly once across restarts: the last stream ID handled is kept in a
checkpoint file, and a restarted consumer reads on from there.

    REDIS_URL=redis://localhost:6379/0 python examples/order_consumer.py orders.checkpoint
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

from alpaca_broker.client import BrokerClient
from alpaca_broker.events import OrderUpdateEvent


def consume(
    client: BrokerClient,
    checkpoint: Path,
    handle: Callable[[str, OrderUpdateEvent], None],
    done: Callable[[], bool] = lambda: False,
) -> None:
    """Hand each order event after the checkpoint to ``handle(id, event)``, then record its
    ID (write the checkpoint in the same transaction as the handling for exactly once)."""
    after = checkpoint.read_text().strip() if checkpoint.exists() else "0-0"
    for entry in client.order_events(after=after or "0-0"):
        handle(entry.id, entry.event)
        checkpoint.write_text(entry.id)
        if done():
            return


def main(argv: list[str]) -> None:
    client = BrokerClient.from_url(os.environ.get("REDIS_URL", "redis://localhost:6379/0"))
    checkpoint = Path(argv[0] if argv else "orders.checkpoint")
    consume(client, checkpoint, lambda i, e: print(i, e["order_id"], e["event"], e["status"]))


if __name__ == "__main__":
    main(sys.argv[1:])
