"""Reconciliation against history: one pass's cost to find the open orders, with 1,000,
100,000 and 1,000,000 historical (final) orders in Redis, and Redis memory per order.

``python -m benchmarks.history [N ...]`` runs it against an embedded Redis.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import redis

from alpaca_broker.keys import Keys
from alpaca_broker.redis_server import RedisServer
from alpaca_broker.settings import Settings
from producers.buffer import EventBuffer, Message
from producers.health import StreamStatus
from producers.reconciliation import Reconciler

KEYS = Keys()
OPEN = 100
# A final order's hash as order.lua writes it (the json field holds the whole event).
FIELDS = {
    "status": "filled", "event": "fill", "symbol": "AAPL", "side": "buy", "qty": "10",
    "filled_qty": "10", "filled_avg_price": "187.494", "ts_ns": "1796000000000000000",
    "updated_at": "2026-11-24T14:30:02.249999999Z", "json": "x" * 1400,
}  # fmt: skip


def _fill(client: redis.Redis, start: int, stop: int) -> None:
    pipe = client.pipeline(transaction=False)
    for i in range(start, stop):
        key = KEYS.order(f"{i:08d}-0000-4000-8000-000000000000")
        pipe.hset(key, mapping=FIELDS)
        pipe.expire(key, 7 * 86400)
        if len(pipe) >= 2000:
            pipe.execute()
    pipe.execute()


def _scan_pass(client: redis.Redis) -> set[str]:
    """The former ``_held_open``: a SCAN of every order hash, then their statuses."""
    prefix = KEYS.order("")
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.hget(key, "status")
    return {k for k, s in zip(keys, pipe.execute(), strict=True) if s != "filled"}


def _stream_trim(client: redis.Redis, added: int = 200_000, cap: int = 100_000) -> str:
    """Size and trim of ``P:orders:events``: ``added`` events under ``MAXLEN ~ cap``."""
    base = int(client.info("memory")["used_memory"])
    pipe = client.pipeline(transaction=False)
    for _ in range(added):
        pipe.xadd(KEYS.orders_events, {"event": FIELDS["json"]}, maxlen=cap, approximate=True)
        if len(pipe) >= 2000:
            pipe.execute()
    pipe.execute()
    length = client.xlen(KEYS.orders_events)
    per = (int(client.info("memory")["used_memory"]) - base) / length
    return f"{added:,} events added with MAXLEN ~ {cap:,}: length {length:,}, {per:.0f} B each"


def main(argv: list[str]) -> int:
    sizes = [int(n) for n in argv] or [1_000, 100_000, 1_000_000]
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "redis")
        server.start()
        try:
            client = redis.Redis.from_url(server.url, decode_responses=True)
            settings = Settings(REDIS_URL=server.url, _env_file=None)
            reconciler = Reconciler(settings, EventBuffer[Message](StreamStatus("orders"), None))
            client.set(f"{KEYS.orders_open}:built", "1")
            for i in range(OPEN):
                oid = f"open-{i}"
                client.hset(KEYS.order(oid), mapping={**FIELDS, "status": "new"})
                client.sadd(KEYS.orders_open, oid)
            base = int(client.info("memory")["used_memory"])
            held = 0
            print("historical orders | index pass ms | SCAN pass ms | bytes per order")
            for size in sizes:
                _fill(client, held, size)
                held = size
                per = (int(client.info("memory")["used_memory"]) - base) / size
                began = time.perf_counter()
                assert len(reconciler._held_open(client)) == OPEN
                index_ms = (time.perf_counter() - began) * 1000
                began = time.perf_counter()
                _scan_pass(client)
                scan_ms = (time.perf_counter() - began) * 1000
                print(f"{size:>17,} | {index_ms:>13.1f} | {scan_ms:>12.0f} | {per:>15.0f}")
            client.flushdb()
            print(_stream_trim(client))
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
