"""``python -m benchmarks.takeover``: how long a standby producer takes to take over.

Two real producers with one ``PRODUCER_LEASE`` against the simulator and an embedded Redis;
the holder is stopped (SIGTERM) or killed (SIGKILL), and the time until the other reports
both streams connected is measured, over several runs. Prints one table (seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from alpaca_broker.children import Children
from alpaca_broker.keys import Keys
from alpaca_broker.redis_server import RedisServer
from simulator.launcher import launch

KEYS = Keys()
STREAMS = ("prices", "orders")


def _wait(condition: Callable[[], bool], timeout: float) -> float:
    """Seconds until ``condition`` held (polled every 10 ms); raises after ``timeout``."""
    began = time.monotonic()
    while not condition():
        if time.monotonic() - began > timeout:
            raise TimeoutError("condition not met")
        time.sleep(0.01)
    return time.monotonic() - began


def _connected(client: redis.Redis, name: str) -> bool:
    doc = _doc(client, name)
    streams = doc.get("streams", {})
    return doc.get("role") == "active" and all(
        streams.get(s, {}).get("state") == "connected" for s in STREAMS
    )


def measure(runs: int, ttl: float, work: Path) -> dict[str, list[float]]:
    """Takeover seconds per way of losing the holder, ``runs`` each."""
    server = RedisServer(work / "redis")
    server.start()
    client = redis.Redis.from_url(server.url, decode_responses=True)
    sim = launch(["--port", "0", "--rate", "200"], os.environ, work / "simulator.log")
    base = {
        **os.environ, **sim.env, "REDIS_URL": server.url, "CELERY_BROKER_URL": server.url,
        "ALPACA_API_KEY": "PKBENCHTAKEOVER00001", "ALPACA_SECRET_KEY": "bench-takeover-secret",
        "PRODUCER_LEASE": "bench", "LEASE_TTL": str(ttl), "HEALTH_INTERVAL": "0.1",
        "LOG_LEVEL": "WARNING", "ALPACA_CONNECTION_LIMIT_WAIT": "2",
    }  # fmt: skip
    results: dict[str, list[float]] = {"SIGTERM": [], "SIGKILL": []}
    argv = [sys.executable, "-m", "alpaca_broker", "producer"]
    try:
        with Children(work) as children:
            live: dict[str, subprocess.Popen[bytes]] = {}
            for i in range(2 * runs + 2):
                if len(live) < 2:  # a fresh producer replaces the one lost last time
                    env = {**base, "PRODUCER_NAME": f"p{i}"}
                    live[f"p{i}"] = children.start(f"p{i}", argv, env)
                if len(live) < 2:
                    continue
                way = "SIGTERM" if len(results["SIGTERM"]) <= len(results["SIGKILL"]) else "SIGKILL"
                if len(results[way]) == runs:
                    break
                pair = list(live)
                _wait(lambda: _active(client, pair) is not None and _standby(client, pair), 60)  # noqa: B023
                holder = _active(client, pair)
                standby = next(n for n in pair if n != holder)
                live.pop(str(holder)).send_signal(
                    signal.SIGTERM if way == "SIGTERM" else signal.SIGKILL
                )
                results[way].append(_wait(lambda: _connected(client, standby), 60))  # noqa: B023
    finally:
        sim.stop()
        server.stop(kill=True)
    return results


def _doc(client: redis.Redis, name: str) -> dict[str, Any]:
    raw = client.get(KEYS.producer_health(name))
    return json.loads(raw) if raw else {}


def _active(client: redis.Redis, names: list[str]) -> str | None:
    """The producer of ``names`` that holds the lease with both streams connected."""
    return next((n for n in names if _connected(client, n)), None)


def _standby(client: redis.Redis, names: list[str]) -> bool:
    return any(_doc(client, n).get("role") == "standby" for n in names)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.takeover", description=__doc__)
    parser.add_argument("--runs", type=int, default=3, help="takeovers of each kind")
    parser.add_argument("--lease-ttl", type=float, default=5.0, help="LEASE_TTL (default 5)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="takeover-") as tmp:
        results = measure(args.runs, args.lease_ttl, Path(tmp))
    print(f"takeover until both streams are connected (LEASE_TTL={args.lease_ttl:g} s), seconds")
    print("| holder lost by | runs | min | median | max |")
    print("| --- | --- | --- | --- | --- |")
    for way, times in results.items():
        print(
            f"| {way} | {', '.join(f'{t:.2f}' for t in times)} | {min(times):.2f} | "
            f"{statistics.median(times):.2f} | {max(times):.2f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
