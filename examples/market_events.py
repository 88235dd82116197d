"""Follow live market events; say when Redis dropped the subscription and events were missed.

REDIS_URL=redis://localhost:6379/0 python examples/market_events.py [SYMBOL ...]
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable

from alpaca_broker.client import BrokerClient, Gap
from alpaca_broker.events import MarketEvent


def follow(
    client: BrokerClient,
    symbols: Iterable[str] | None,
    on_event: Callable[[MarketEvent], None],
    on_gap: Callable[[Gap], None],
    done: Callable[[], bool] = lambda: False,
) -> None:
    """Hand every live event of ``symbols`` (all when None) to ``on_event``, every lost
    stretch to ``on_gap`` (the client has already subscribed again), until ``done()``."""
    for item in client.market_events(symbols):
        if isinstance(item, Gap):
            on_gap(item)
        else:
            on_event(item)
        if done():
            return


def main(argv: list[str]) -> None:
    client = BrokerClient.from_url(os.environ.get("REDIS_URL", "redis://localhost:6379/0"))
    follow(
        client,
        argv or None,
        lambda e: print(e["type"], e["symbol"], e["timestamp"]),
        lambda g: print(f"GAP: events missed ({g.reason}), resubscribed", file=sys.stderr),
    )


if __name__ == "__main__":
    main(sys.argv[1:])
