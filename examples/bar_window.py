"""Read a window of minute bars and check it has every minute.

REDIS_URL=redis://localhost:6379/0 python examples/bar_window.py SPY 60
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime, timedelta

from alpaca_broker.client import BrokerClient
from alpaca_broker.events import BarEvent

MINUTE_MS = 60_000


def window(client: BrokerClient, symbol: str, end: datetime, minutes: int) -> list[BarEvent]:
    """The bars of the ``minutes`` whole minutes before ``end`` (oldest first)."""
    end = end.replace(second=0, microsecond=0)
    return client.bars(symbol, end - timedelta(minutes=minutes), end)


def missing_minutes(bars: list[BarEvent], end: datetime, minutes: int) -> list[datetime]:
    """The minutes of the window that have no bar."""
    end = end.replace(second=0, microsecond=0)
    have = {bar["ts_ns"] // 1_000_000 for bar in bars}
    starts = (end - timedelta(minutes=m) for m in range(minutes, 0, -1))
    return [s for s in starts if int(s.timestamp() * 1000) not in have]


def main(argv: list[str]) -> None:
    client = BrokerClient.from_url(os.environ.get("REDIS_URL", "redis://localhost:6379/0"))
    symbol, minutes, now = argv[0], int(argv[1]) if len(argv) > 1 else 60, datetime.now(UTC)
    for bar in window(client, symbol, now, minutes):
        print(bar["timestamp"], bar["open"], bar["high"], bar["low"], bar["close"], bar["volume"])
    bars = window(client, symbol, now, minutes)
    print("missing minutes:", [m.isoformat() for m in missing_minutes(bars, now, minutes)])


if __name__ == "__main__":
    main(sys.argv[1:])
