"""The ceiling: alpaca-py's own read loop, ``raw_data=True``, a handler that only counts.

The limit for any producer built on alpaca-py: connect, authenticate, subscribe, and for each
frame alpaca-py's ``_consume`` (msgpack decode, one ``await handler(msg)`` per message). No
hand-off, no Redis in the loop. A thread writes the count, in the producer health key's
shape, every ``HEALTH_INTERVAL`` seconds, so that the bench reads its ingest rate the way it
reads the producer's. ``python -m benchmarks.ceiling`` runs it.
"""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import UTC, datetime
from typing import Any

import redis
from alpaca.data.live.stock import StockDataStream

from alpaca_broker.keys import Keys
from alpaca_broker.settings import load_settings


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")  # as the producer's heartbeat


def main() -> int:
    """Count what alpaca-py reads, and publish the count as a health key."""
    settings = load_settings()
    key, secret = settings.credentials()
    stream = StockDataStream(key, secret, raw_data=True, url_override=settings.data_stream_url)
    count = [0]

    async def on_message(msg: dict[str, Any]) -> None:
        count[0] += 1

    def report() -> None:
        client = redis.Redis.from_url(settings.redis_url)
        health = Keys(settings.redis_key_prefix).producer_health(settings.producer_name)
        interval = float(os.environ.get("HEALTH_INTERVAL", "1"))
        while True:
            n = count[0]
            prices = {"state": "connected", "received": n, "enqueued": n, "dropped": 0}
            body = {"status": "ok", "streams": {"prices": prices}, "updated_at": _now()}
            client.set(health, json.dumps(body), ex=30)
            time.sleep(interval)

    threading.Thread(target=report, daemon=True).start()
    stream.subscribe_trades(on_message, *settings.alpaca_symbols)
    stream.subscribe_quotes(on_message, *settings.alpaca_symbols)
    stream.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
