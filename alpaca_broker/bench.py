"""``alpaca-broker bench``: end-to-end throughput and latency against the simulator.

Every offered rate runs the real processes on one embedded Redis: the simulator, the
producer, a price worker and an order worker. Probes subscribe to the price and order
channels and time each event from ``received_at`` (the producer read it off the socket)
to its arrival on the channel.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from alpaca_broker.probes import ChannelProbe, ProcessSampler
from alpaca_broker.redis_server import RedisServer
from celery_app.keys import Keys

KEYS = Keys()
REPO = Path(__file__).resolve().parents[1]
SYMBOLS = [f"SY{i:03d}" for i in range(50)]


def _spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(argv, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)


def _simulator(
    rate: float, order_rate: float, env: dict[str, str], log: Path
) -> tuple[Any, dict[str, str]]:
    argv = [
        sys.executable, "-m", "alpaca_broker", "simulate", "--port", "0", "--rate", str(rate),
        "--order-rate", str(order_rate), "--symbols", ",".join(SYMBOLS), "--mix", "t=40,q=60",
        "--log-level", "WARNING",
    ]  # fmt: skip
    proc = subprocess.Popen(argv, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=log.open("ab"))
    assert proc.stdout is not None
    urls = dict(proc.stdout.readline().decode().strip().split("=", 1) for _ in range(3))
    return proc, urls


def run_rate(
    rate: float, args: argparse.Namespace, server: RedisServer, work: Path
) -> dict[str, Any]:
    """One offered rate: start everything, warm up, measure, stop; returns the figures."""
    client = redis.Redis.from_url(server.url)
    client.flushall()
    base = {"REDIS_URL": server.url, "PYTHONPATH": str(REPO), "LOG_LEVEL": "WARNING"}
    env = {**_base_env(), **base}
    sim, urls = _simulator(rate, args.order_rate, env, work / "simulator.log")
    worker = [sys.executable, "-m", "celery", "-A", "celery_app", "worker", "--without-gossip",
              "--without-mingle", "-l", "WARNING"]  # fmt: skip
    prices_workers = _price_workers(worker, args, env, work)
    orders_worker = _spawn(
        [*worker, "-Q", "orders", "-n", "orders@%h", "-c", "1"], env, work / "worker-orders.log"
    )
    prices = ChannelProbe(server.url, KEYS.prices_pattern, sample=args.sample).start()
    orders = ChannelProbe(server.url, KEYS.orders_channel).start()
    producer_env = {
        **env, **urls, "ALPACA_API_KEY": "bench-key", "ALPACA_SECRET_KEY": "bench-secret",
        "ALPACA_SYMBOLS": ",".join(SYMBOLS), "ALPACA_DATA_CHANNELS": "trades,quotes",
        "HEALTH_INTERVAL": "1",
    }  # fmt: skip
    producer = _spawn(
        [sys.executable, "-m", "alpaca_broker", "producer"], producer_env, work / "producer.log"
    )
    roles = {
        "producer": [producer.pid],
        "worker": [w.pid for w in prices_workers],
        "simulator": [sim.pid],
    }
    sampler = ProcessSampler({**roles, "redis": [server.proc.pid] if server.proc else []})
    try:
        deadline = time.monotonic() + args.warmup
        while time.monotonic() < deadline:
            time.sleep(0.1)
        sampler.begin()
        prices.measure(True)
        orders.measure(True)
        deadline = time.monotonic() + args.duration
        while time.monotonic() < deadline:
            sampler.sample_rss()
            time.sleep(0.5)
        prices.measure(False)
        orders.measure(False)
        cpu = sampler.cpu_percent()
        backlog = client.llen("prices")
    finally:
        producer.terminate()
        producer.wait(30)
    health = json.loads(client.get(KEYS.producer_health("default")) or "{}")
    stream = health.get("streams", {}).get("prices", {})
    _settle(prices)
    for proc in (*prices_workers, orders_worker, sim):
        proc.terminate()
    for proc in (*prices_workers, orders_worker, sim):
        proc.wait(30)
    prices.stop()
    orders.stop()
    return {
        "offered": rate,
        "prices": prices.summary(),
        "orders": orders.summary(),
        "cpu_percent": cpu,
        "peak_rss_mb": {k: round(v / 2**20, 1) for k, v in sampler.peak_rss.items()},
        "received": stream.get("received", 0),
        "published": prices.count,
        "dropped": stream.get("dropped", 0),
        "backlog_at_end": backlog,
    }


def _price_workers(
    worker: list[str], args: argparse.Namespace, env: dict[str, str], work: Path
) -> list[subprocess.Popen[bytes]]:
    """One prefork worker with ``concurrency`` children, or that many solo workers."""
    common = [*worker, "-Q", "prices", "--prefetch-multiplier", "4"]
    if args.pool == "solo":
        return [
            _spawn([*common, "-n", f"prices{i}@%h", "-P", "solo"], env, work / f"worker-p{i}.log")
            for i in range(args.concurrency)
        ]
    argv = [*common, "-n", "prices@%h", "-c", str(args.concurrency)]
    return [_spawn(argv, env, work / "worker-prices.log")]


def _settle(probe: ChannelProbe, quiet: float = 2.0, limit: float = 60.0) -> None:
    """Wait until no event arrived for ``quiet`` seconds (the pipeline drained)."""
    began, last, seen = time.monotonic(), time.monotonic(), probe.count
    while time.monotonic() - last < quiet and time.monotonic() - began < limit:
        time.sleep(0.2)
        if probe.count != seen:
            seen, last = probe.count, time.monotonic()


def _base_env() -> dict[str, str]:
    import os

    return {
        k: v for k, v in os.environ.items() if not k.startswith(("ALPACA_", "APCA_", "CELERY_"))
    }


def render(rows: list[dict[str, Any]]) -> str:
    """The table printed at the end."""
    head = (
        f"{'offered/s':>9} {'path':>6} {'events/s':>9} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} "
        f"{'prod CPU%':>9} {'work CPU%':>9} {'redis CPU%':>10} {'prod MB':>7} {'work MB':>7} "
        f"{'dropped':>7} {'lost':>5}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        cpu, rss = r["cpu_percent"], r["peak_rss_mb"]
        lost = r["received"] - r["published"]
        for path in ("prices", "orders"):
            s = r[path]
            dropped, lost_text = (r["dropped"], str(lost)) if path == "prices" else (0, "-")
            lines.append(
                f"{r['offered']:>9.0f} {path:>6} {s['events_per_s']:>9.0f} {s['p50_ms']:>7.1f} "
                f"{s['p95_ms']:>7.1f} {s['p99_ms']:>7.1f} {cpu['producer']:>9.0f} "
                f"{cpu['worker']:>9.0f} {cpu['redis']:>10.0f} {rss['producer']:>7.0f} "
                f"{rss['worker']:>7.0f} {dropped:>7} {lost_text:>5}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``alpaca-broker bench``."""
    parser = argparse.ArgumentParser(prog="alpaca-broker bench", description=__doc__)
    parser.add_argument(
        "--rates", default="5000,25000", help="offered market messages/s, comma-separated"
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per rate")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring")
    parser.add_argument(
        "--order-rate", type=float, default=20.0, help="synthetic orders started per second"
    )
    parser.add_argument("--concurrency", type=int, default=2, help="price worker processes")
    parser.add_argument("--sample", type=int, default=8, help="time one price event in N")
    parser.add_argument(
        "--pool", default="solo", help="price workers: solo (CONCURRENCY processes) or prefork"
    )
    parser.add_argument("--json", type=Path, help="also write the raw figures to this file")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="alpaca-bench-") as tmp:
        work = Path(tmp)
        server = RedisServer(work / "redis", fsync="everysec")
        server.start()
        try:
            for rate in (float(r) for r in args.rates.split(",")):
                rows.append(run_rate(rate, args, server, work))
                print(
                    render(rows[-1:]).splitlines()[-2 if rows[:-1] else 0],
                    file=sys.stderr,
                    flush=True,
                )
        finally:
            server.stop()
    print(render(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0
