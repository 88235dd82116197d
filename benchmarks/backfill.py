"""``python -m benchmarks.backfill``: a fresh start's bar backfill, and what it costs the stream.

A real producer subscribed to trades and bars of N symbols (default 40) starts against the
simulator and an empty embedded Redis, with one price worker: it fetches ``BAR_BACKFILL_MINUTES``
of minute bars per symbol (default 10,080: 7 days) from the historical API of a second simulator
process (Alpaca's REST servers are not its stream servers), a page at a time, and sends them on
the backfill's own path (paced price tasks, never the live buffer) while trades stream live.
Measured: the time until every backfilled bar is in ``P:bars``, the bars dropped (the
producer's ``dropped``), the producer's peak RSS, and the live trades' latency (``received_at``
to the channel) while the backfill runs and after it, against a run with no backfill
(``BAR_BACKFILL_MINUTES=0``). Prints one table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import redis

from alpaca_broker.children import Children
from alpaca_broker.keys import Keys
from alpaca_broker.redis_server import RedisServer
from alpaca_broker.timestamps import parse_rfc3339
from simulator.launcher import launch

KEYS = Keys()
SETTLE = 3.0
"""Seconds after the first trade before latencies count (the producer and worker warm up)."""
LIVE_ONLY = 30.0
"""Seconds the run without a backfill measures the live stream alone."""


class Latencies:
    """Trade latencies off the price channels, each stamped with when it arrived."""

    def __init__(self, client: redis.Redis) -> None:
        self.samples: list[tuple[float, float]] = []
        self._pubsub = client.pubsub(ignore_subscribe_messages=True)
        self._pubsub.psubscribe(KEYS.prices_pattern)
        self._stop = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                message = self._pubsub.get_message(timeout=0.1)
            except redis.RedisError:
                return  # the run is over: its Redis is gone
            if message is None:
                continue
            event = json.loads(message["data"])
            if event["type"] == "trade":
                now = time.time()
                self.samples.append((now, now - parse_rfc3339(event["received_at"]) / 1e9))

    def p99_ms(self, start: float, end: float) -> float:
        window = sorted(lat for at, lat in self.samples if start <= at < end)
        return 1000 * window[int(0.99 * (len(window) - 1))] if window else float("nan")

    def first(self) -> float:
        """When the first trade arrived (the end of time when none has)."""
        return self.samples[0][0] if self.samples else float("inf")

    def stop(self) -> None:
        self._stop.set()


def run(symbols: list[str], minutes: int, rate: float, work: Path) -> dict[str, float]:
    """One run: backfill seconds (0 when ``minutes`` is 0), the producer's drops and peak RSS,
    and the trade p99s."""
    server = RedisServer(work / "redis")
    server.start()
    client = redis.Redis.from_url(server.url, decode_responses=True)
    sim = launch(["--port", "0", "--rate", str(rate), "--symbols", ",".join(symbols)],
                 os.environ, work / "simulator.log")  # fmt: skip
    # The historical API on a simulator of its own, as Alpaca's REST servers are not its stream
    # servers: the simulator answers a page on its event loop, which would hold its stream back.
    history = launch(["--port", "0", "--rate", "1"], os.environ, work / "history.log")
    env = {
        **os.environ, **sim.env, "ALPACA_DATA_API_URL": history.env["ALPACA_DATA_API_URL"],
        "REDIS_URL": server.url, "CELERY_BROKER_URL": server.url,
        "ALPACA_API_KEY": "PKBENCHBACKFILL00001", "ALPACA_SECRET_KEY": "bench-backfill-secret",
        "ALPACA_SYMBOLS": ",".join(symbols), "ALPACA_DATA_CHANNELS": "trades,bars",
        "BAR_BACKFILL_MINUTES": str(minutes), "LOG_LEVEL": "WARNING", "HEALTH_INTERVAL": "0.5",
        # Keep the whole window: BAR_HISTORY_DAYS would clip a backfill as long as itself.
        "BAR_HISTORY_DAYS": str(minutes // 1440 + 1),
    }  # fmt: skip
    latencies = Latencies(client)
    try:
        with Children(work) as children:
            celery = [sys.executable, "-m", "celery", "-A", "celery_app", "worker"]
            children.start("worker", [*celery, "-Q", "prices", "-P", "solo", "-l", "WARNING"], env)
            began = time.time()
            argv = [sys.executable, "-m", "alpaca_broker", "producer", "--streams", "prices"]
            producer = children.start("producer", argv, env)
            process = psutil.Process(producer.pid)
            peak_rss = 0
            wanted = len(symbols) * minutes
            while wanted and _backfilled(client, symbols) < wanted:
                if time.time() - began > 600:
                    raise TimeoutError("the backfill did not complete in 600 s")
                peak_rss = max(peak_rss, process.memory_info().rss)
                time.sleep(0.05)
            if not wanted:
                time.sleep(LIVE_ONLY)  # the live stream alone, as long as a backfill takes
            done = time.time()
            time.sleep(10)  # the live stream alone, after the backfill
            after = time.time()
            peak_rss = max(peak_rss, process.memory_info().rss)
            health = json.loads(client.get(KEYS.producer_health("default")) or "{}")
            prices = health.get("streams", {}).get("prices", {})
    finally:
        latencies.stop()
        sim.stop()
        history.stop()
        server.stop(kill=True)
    return {
        "backfill_s": done - began if wanted else 0.0,
        "dropped": float(prices.get("dropped", float("nan"))),
        "handed_off": float(prices.get("backfill", {}).get("bars", 0)),
        "peak_rss_mb": peak_rss / 2**20,
        # From SETTLE seconds after the first trade: the producer's start is no backfill's.
        "p99_during_ms": latencies.p99_ms(latencies.first() + SETTLE, done),
        "p99_after_ms": latencies.p99_ms(done, after),
    }


def _backfilled(client: redis.Redis, symbols: list[str]) -> int:
    pipe = client.pipeline(transaction=False)
    for symbol in symbols:
        pipe.zcard(KEYS.bars(symbol))
    return sum(pipe.execute())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.backfill", description=__doc__)
    parser.add_argument("--symbols", type=int, default=40, help="symbols subscribed to bars")
    parser.add_argument("--minutes", type=int, default=7 * 1440, help="BAR_BACKFILL_MINUTES")
    parser.add_argument("--rate", type=float, default=2000, help="live market messages/s")
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args(argv)
    symbols = [f"S{i:03d}" for i in range(args.symbols)]
    rows = []
    for _ in range(args.runs):
        for minutes in (args.minutes, 0):
            with tempfile.TemporaryDirectory(prefix="backfill-") as tmp:
                rows.append((minutes, run(symbols, minutes, args.rate, Path(tmp))))
    print(f"{args.symbols} symbols x {args.minutes} minutes, live trades at {args.rate:g} msgs/s")
    print("| backfill | bars | in `P:bars` after (s) | bars/s | dropped | producer peak RSS (MB) "
          "| trade p99 during (ms; off: live only) | trade p99 after (ms) |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for minutes, r in rows:
        bars = args.symbols * minutes
        rate = f"{bars / r['backfill_s']:,.0f}" if minutes else "-"
        print(f"| {'on' if minutes else 'off'} | {bars:,} | {r['backfill_s']:.1f} | {rate} | "
              f"{r['dropped']:.0f} | {r['peak_rss_mb']:.0f} | {r['p99_during_ms']:.1f} | "
              f"{r['p99_after_ms']:.1f} |")  # fmt: skip
    medians = [r["backfill_s"] for m, r in rows if m]
    print(f"median backfill: {statistics.median(medians):.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
