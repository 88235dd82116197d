"""``alpaca-broker bench``: end-to-end throughput and latency of three designs, one run.

For every design and offered rate, the real processes run against one embedded Redis: the
simulator, the design's producer and workers. Probes subscribe to the price (and order)
channels and time each event from ``received_at`` (the producer read it off the socket) to
its arrival on the channel. Designs: this project's ``pipeline``; the ``naive`` one (pydantic
models, one task per message); the ``direct`` path (no Celery) as the ceiling.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from alpaca_broker.bench_designs import Design, all_designs
from alpaca_broker.bench_report import plot, render
from alpaca_broker.keys import Keys
from alpaca_broker.probes import ChannelProbe, ProcessSampler
from alpaca_broker.redis_server import RedisServer

KEYS = Keys()
PRODUCER = "bench"
REPO = Path(__file__).resolve().parents[1]
SYMBOLS = [f"SY{i:03d}" for i in range(50)]


def _spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(argv, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)


def _stop(procs: list[subprocess.Popen[bytes]], grace: float = 15.0) -> None:
    """SIGTERM, then SIGKILL what has not exited after ``grace`` seconds (a naive worker
    with a deep backlog can take longer than a run to shut down warm)."""
    for proc in procs:
        proc.terminate()
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _simulator(
    rate: float, order_rate: float, env: dict[str, str], log: Path
) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    argv = [
        sys.executable, "-m", "alpaca_broker", "simulate", "--port", "0", "--rate", str(rate),
        "--order-rate", str(order_rate), "--symbols", ",".join(SYMBOLS), "--mix", "t=40,q=60",
        "--log-level", "WARNING",
    ]  # fmt: skip
    with log.open("ab") as err:
        proc = subprocess.Popen(argv, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=err)
    assert proc.stdout is not None
    urls = dict(proc.stdout.readline().decode().strip().split("=", 1) for _ in range(3))
    return proc, urls


def _wait(seconds: float, sampler: ProcessSampler | None = None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if sampler:
            sampler.sample_rss()
        time.sleep(0.5 if sampler else 0.1)


def run_one(
    design: Design, rate: float, args: argparse.Namespace, server: RedisServer, work: Path
) -> dict[str, Any]:
    """One design at one offered rate: start, warm up, measure, stop; returns the figures."""
    client = redis.Redis.from_url(server.url)
    client.flushall()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALPACA_", "APCA_", "CELERY_"))}
    # Set explicitly: the children run in the repo and would otherwise take these from .env.
    env.update(
        REDIS_URL=server.url, CELERY_BROKER_URL="", REDIS_KEY_PREFIX=KEYS.prefix,
        PRODUCER_NAME=PRODUCER, PYTHONPATH=str(REPO), LOG_LEVEL="WARNING",
    )  # fmt: skip
    order_rate = args.order_rate if design.orders else 0
    sim, urls = _simulator(rate, order_rate, env, work / "simulator.log")
    workers = [
        _spawn(argv, env, work / f"{design.name}-{n}.log") for n, argv in design.workers.items()
    ]
    prices = ChannelProbe(server.url, KEYS.prices_pattern, sample=args.sample).start()
    orders = ChannelProbe(server.url, KEYS.orders_channel).start()
    producer_env = {
        **env, **urls, "ALPACA_API_KEY": "bench-key", "ALPACA_SECRET_KEY": "bench-secret",
        "ALPACA_SYMBOLS": ",".join(SYMBOLS), "ALPACA_DATA_CHANNELS": "trades,quotes",
        "HEALTH_INTERVAL": "1",
    }  # fmt: skip
    producer = _spawn(design.producer, producer_env, work / f"{design.name}-producer.log")
    price_workers = [w.pid for w, n in zip(workers, design.workers, strict=True) if n != "orders"]
    sampler = ProcessSampler(
        {
            "producer": [producer.pid],
            "worker": price_workers,
            "simulator": [sim.pid],
            "redis": [server.proc.pid] if server.proc else [],
        }
    )
    try:
        _wait(args.warmup)
        sampler.begin()
        prices.measure(True)
        orders.measure(True)
        _wait(args.duration, sampler)
        prices.measure(False)
        orders.measure(False)
        cpu = sampler.cpu_percent()
    finally:
        _stop([producer])
    health = json.loads(client.get(KEYS.producer_health(PRODUCER)) or "{}")
    stream = health.get("streams", {}).get("prices", {})
    if stream:  # a design with a heartbeat: let it drain, to count what was lost
        _settle(prices)
    _stop([*workers, sim])
    prices.stop()
    orders.stop()
    return {
        "design": design.name,
        "offered": rate,
        "prices": prices.summary(),
        "orders": orders.summary() if design.orders else None,
        "cpu_percent": cpu,
        "peak_rss_mb": {k: round(v / 2**20, 1) for k, v in sampler.peak_rss.items()},
        "received": stream.get("received"),
        "published": prices.count,
        "dropped": stream.get("dropped", 0),
    }


def _settle(probe: ChannelProbe, quiet: float = 2.0, limit: float = 60.0) -> None:
    """Wait until no event arrived for ``quiet`` seconds (the pipeline drained)."""
    began, last, seen = time.monotonic(), time.monotonic(), probe.count
    while time.monotonic() - last < quiet and time.monotonic() - began < limit:
        time.sleep(0.2)
        if probe.count != seen:
            seen, last = probe.count, time.monotonic()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``alpaca-broker bench``."""
    parser = argparse.ArgumentParser(prog="alpaca-broker bench", description=__doc__)
    parser.add_argument("--designs", default="pipeline,naive,direct", help="which designs to run")
    parser.add_argument(
        "--rates", default="5000,25000", help="offered market msgs/s, comma-separated"
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per run")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring")
    parser.add_argument(
        "--order-rate", type=float, default=20.0, help="synthetic orders/s (pipeline)"
    )
    parser.add_argument("--concurrency", type=int, default=2, help="price worker processes")
    parser.add_argument("--pool", default="solo", help="pipeline price workers: solo or prefork")
    parser.add_argument("--sample", type=int, default=8, help="time one price event in N")
    parser.add_argument("--out", type=Path, default=Path("bench-out"), help="JSON and PNG go here")
    args = parser.parse_args(argv)
    designs = all_designs(args.concurrency, args.pool)
    chosen = [designs[name] for name in args.designs.split(",")]
    rates = [float(r) for r in args.rates.split(",")]
    rows: list[dict[str, Any]] = []
    for design in chosen:
        print(f"{design.name}: {design.description}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="alpaca-bench-") as tmp:
        server = RedisServer(Path(tmp) / "redis", fsync="everysec")
        server.start()
        try:
            for design in chosen:
                for rate in rates:
                    rows.append(run_one(design, rate, args, server, Path(tmp)))
                    for line in render(rows[-1:]).splitlines()[2:]:
                        print(line, file=sys.stderr, flush=True)
        finally:
            server.stop()
    print(render(rows))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps(rows, indent=2))
    note = plot(rows, args.out / "bench.png")
    print(f"\nraw figures: {args.out / 'bench.json'}; {note}")
    return 0
