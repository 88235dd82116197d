"""``python -m benchmarks.universe``: from ``alpaca-broker subscribe`` to the first event.

A real producer and a real price worker against the simulator (in this process) and an
embedded Redis. For each size (1, 1,000, 12,000 added symbols by default), each run: the
universe goes back to ``SPY`` (``subscriptions prices --reset``), then one
``alpaca-broker subscribe prices --file ...`` adds that many new symbols while the simulator
pushes a trade of the first and of the last added symbol every 10 ms (a trade reaches the
producer only once its symbol is subscribed). Measured from the command's start: the
command itself (a Python process: mostly start-up), the first added symbol's first event on
its ``P:prices:{SYMBOL}`` channel, the last added symbol's (in the last message), and the
health key showing the whole universe confirmed by Alpaca. Prints one table (seconds,
median of the runs, and the slowest).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from alpaca_broker.children import Children
from alpaca_broker.keys import Keys
from alpaca_broker.redis_server import RedisServer
from benchmarks.designs import CELERY, WORKER_FLAGS
from simulator import messages
from simulator.api import Simulator

KEYS = Keys()
NAME = "bench-universe"


def _wait(condition: Callable[[], object], timeout: float) -> float:
    """Monotonic time at which ``condition`` first held (polled every 5 ms)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.005)
    return time.monotonic()


def _view(client: redis.Redis) -> dict[str, Any]:
    raw = client.get(KEYS.producer_health(NAME))
    doc = json.loads(raw) if raw else {}
    view: dict[str, Any] = doc.get("streams", {}).get("prices", {}).get("subscriptions") or {}
    return view


def _settled(client: redis.Redis, size: int) -> bool:
    view = _view(client)
    return view.get("confirmed") == size == view.get("desired") and view.get("pending") == 0


def _symbols(run: int, count: int) -> list[str]:
    """``count`` fresh stock symbols for ``run`` (never subscribed before in this bench)."""
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    out = []
    for i in range(count):
        tail = "".join(letters[(i // 26**k) % 26] for k in (3, 2, 1, 0))
        out.append(f"{letters[run % 26]}{tail}")
    return out


class Pusher:
    """Pushes a trade of each watched symbol every 10 ms while running."""

    def __init__(self, sim: Simulator, symbols: list[str]) -> None:
        self.sim, self.symbols = sim, symbols
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        while not self.stop.wait(0.01):
            n += 1
            now = time.time_ns()
            batch = [messages.trade(s, now, trade_id=n, price=10.0, size=1) for s in self.symbols]
            self.sim.push_market(batch)

    def __enter__(self) -> Pusher:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)


def one_run(
    sim: Simulator, client: redis.Redis, env: dict[str, str], work: Path, symbols: list[str]
) -> dict[str, float]:
    """Seconds from the command's start to each milestone, for one addition of ``symbols``."""
    argv = [sys.executable, "-m", "alpaca_broker"]
    subprocess.run([*argv, "subscriptions", "prices", "--reset"], env=env, check=True,
                   capture_output=True)  # fmt: skip
    _wait(lambda: _settled(client, 1), 120)
    listing = work / "symbols.txt"
    listing.write_text("\n".join(symbols) + "\n")
    first, last = symbols[0], symbols[-1]
    seen: dict[str, float] = {}
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(KEYS.prices(first), KEYS.prices(last))
    _wait(lambda: pubsub.get_message(timeout=0.01) is None and pubsub.subscribed, 5)

    wanted = {first, last}

    def listen() -> None:
        while len(seen) < len(wanted):
            message = pubsub.get_message(timeout=0.05)
            if message is not None:
                symbol = json.loads(message["data"])["symbol"]
                seen.setdefault(symbol, time.monotonic())

    confirmed: list[float] = []

    def confirm() -> None:  # the health key, written every 50 ms
        confirmed.append(_wait(lambda: _settled(client, len(symbols) + 1), 120))

    listener = threading.Thread(target=listen, daemon=True)
    monitor = threading.Thread(target=confirm, daemon=True)
    listener.start()
    with Pusher(sim, sorted(wanted)):
        began = time.monotonic()
        monitor.start()
        subprocess.run([*argv, "subscribe", "prices", "--file", str(listing)], env=env,
                       check=True, capture_output=True)  # fmt: skip
        returned = time.monotonic()
        _wait(lambda: len(seen) == len(wanted) and confirmed, 120)
    listener.join(5)
    pubsub.close()
    return {
        "command": returned - began,
        "first": seen[first] - began,
        "last": seen[last] - began,
        "confirmed": confirmed[0] - began,
    }


def measure(sizes: list[int], runs: int, work: Path) -> dict[int, list[dict[str, float]]]:
    """Each size's runs (:func:`one_run`)."""
    server = RedisServer(work / "redis")
    server.start()
    client = redis.Redis.from_url(server.url, decode_responses=True)
    results: dict[int, list[dict[str, float]]] = {size: [] for size in sizes}
    try:
        with Simulator() as sim, Children(work) as children:
            env = {
                **os.environ, **dict(line.split("=", 1) for line in sim.env_lines()),
                "REDIS_URL": server.url, "CELERY_BROKER_URL": server.url,
                "ALPACA_API_KEY": "PKBENCHUNIVERSE00001", "ALPACA_SECRET_KEY": "bench-universe",
                "ALPACA_SYMBOLS": "SPY", "ALPACA_DATA_CHANNELS": "trades,quotes",
                "PRODUCER_NAME": NAME, "HEALTH_INTERVAL": "0.05", "LOG_LEVEL": "WARNING",
            }  # fmt: skip
            worker = [*CELERY, "celery_app", *WORKER_FLAGS, "-Q", "prices", "-P", "solo"]
            children.start("worker", worker, env)
            producer = [sys.executable, "-m", "alpaca_broker", "producer", "--streams", "prices"]
            children.start("producer", producer, env)
            _wait(lambda: _view(client).get("confirmed") == 1, 60)
            run = 0
            for size in sizes:
                for _ in range(runs):
                    run += 1
                    results[size].append(one_run(sim, client, env, work, _symbols(run, size)))
    finally:
        client.close()
        server.stop(kill=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.universe", description=__doc__)
    parser.add_argument(
        "--sizes", default="1,1000,12000", help="symbols added per command (1,1000,12000)"
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per size (3)")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    with tempfile.TemporaryDirectory(prefix="universe-") as tmp:
        results = measure(sizes, args.runs, Path(tmp))
    print("from `alpaca-broker subscribe prices ...` (start of the command), seconds:")
    print("median (slowest) of the runs")
    print("| added | runs | command | first event | last symbol's event | all confirmed |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for size, rows in results.items():
        cells = [
            f"{statistics.median(r[k] for r in rows):.2f} ({max(r[k] for r in rows):.2f})"
            for k in ("command", "first", "last", "confirmed")
        ]
        print(f"| {size:,} | {len(rows)} | {' | '.join(cells)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
