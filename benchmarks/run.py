"""``alpaca-broker bench``: end-to-end throughput and latency of three designs, one run.

For every design and offered rate, the real processes run against one embedded Redis: the
simulator, the design's producer and workers. Probes subscribe to the price (and order)
channels and time each event from ``received_at`` (the producer read it off the socket) to
its arrival on the channel. Designs: this project's ``pipeline``; the ``naive`` one (pydantic
models, one task per message); the ``direct`` path (no Celery) as the ceiling.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis

from alpaca_broker.children import Children
from alpaca_broker.keys import PRICES_QUEUE, Keys
from alpaca_broker.redis_server import RedisServer, require_redis, unreachable
from benchmarks.designs import Design, all_designs
from benchmarks.probes import ChannelProbe, IngestProbe, ProcessSampler
from benchmarks.report import best_ingest, plot, render
from simulator import launcher

KEYS = Keys()
PRODUCER = "bench"
SYMBOLS = [f"SY{i:03d}" for i in range(50)]


def _simulator(
    children: Children,
    rate: float,
    order_rate: float,
    env: dict[str, str],
    extra: list[str],
    nice: int = 0,
) -> dict[str, str]:
    offered = str(rate) if rate else "max"  # 0: as fast as the client reads
    options = [
        "--port", "0", "--rate", offered, "--order-rate", str(order_rate),
        "--symbols", ",".join(SYMBOLS), "--mix", "t=40,q=60", "--log-level", "WARNING",
        *extra,
    ]  # fmt: skip
    sim = launcher.launch(options, env, children.log("simulator"), cwd=children.cwd)
    children.adopt("simulator", sim.proc)
    if nice:  # it stands for Alpaca's servers: the pipeline's processes come first for the CPU
        os.setpriority(os.PRIO_PROCESS, sim.proc.pid, nice)
    return sim.env


def _wait(
    seconds: float, sampler: ProcessSampler | None = None, ingest: IngestProbe | None = None
) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if sampler:
            sampler.sample_rss()
        if ingest:
            ingest.sample()
        time.sleep(0.25 if sampler else 0.1)


def run_one(
    design: Design, rate: float, args: argparse.Namespace, server: RedisServer | str, work: Path
) -> dict[str, Any]:
    """One design at one offered rate against the embedded ``server`` (or a Redis URL)."""
    redis_url = server if isinstance(server, str) else server.url
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALPACA_", "APCA_", "CELERY_"))}
    # Set explicitly, whatever the environment says; the children run in ``work``, where
    # no .env is.
    env.update(
        REDIS_URL=redis_url, CELERY_BROKER_URL="", REDIS_KEY_PREFIX=KEYS.prefix,
        PRODUCER_NAME=PRODUCER, LOG_LEVEL="WARNING",
    )  # fmt: skip
    own = [server.proc.pid] if isinstance(server, RedisServer) and server.proc else []
    with Children(work, cwd=work) as children, _prices_broker(args, work) as prices:
        if prices is not None and prices.proc:
            env["CELERY_PRICES_BROKER_URL"] = prices.url
            own.append(prices.proc.pid)  # counted as Redis CPU, beside the output Redis
        return _measure(design, rate, args, env, children, client, own)


@contextlib.contextmanager
def _prices_broker(args: argparse.Namespace, work: Path) -> Iterator[RedisServer | None]:
    """With ``--prices-broker own``, a Redis without AOF for the ``prices`` queue, as
    docs/scaling.md deploys it (fresh for every run, like the output Redis)."""
    if args.prices_broker != "own":
        yield None
        return
    server = RedisServer(Path(tempfile.mkdtemp(prefix="prices-broker-", dir=work)), aof=False)
    _start(server)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.directory, ignore_errors=True)


def _measure(
    design: Design,
    rate: float,
    args: argparse.Namespace,
    env: dict[str, str],
    children: Children,
    client: redis.Redis,
    redis_pids: list[int],
) -> dict[str, Any]:
    """Start, warm up, measure, stop; returns the figures."""
    order_rate = args.order_rate if design.orders else 0
    extra = args.simulator_options.split()
    if args.pool_frames:
        # Frames drawn once and sent over and over: drawing a message cost the simulator (it
        # stands for Alpaca's servers) more than reading it costs any reader, which made it
        # the limit of the readers at max, and half a core at 25,000 msgs/s. A design that
        # publishes gets them at the present time (--restamp), so it sees a live market.
        extra += ["--pool", str(args.pool_frames)] + (["--restamp"] if design.publishes else [])
    urls = _simulator(children, rate, order_rate, env, extra, args.simulator_nice)
    for name, argv in design.workers.items():
        children.start(f"{design.name}-{name}", argv, env)
    prices = ChannelProbe(env["REDIS_URL"], KEYS.prices_pattern, sample=args.sample).start()
    orders = ChannelProbe(env["REDIS_URL"], KEYS.orders_channel).start()
    producer_env = {
        **env, **urls, "ALPACA_API_KEY": "bench-key", "ALPACA_SECRET_KEY": "bench-secret",
        "ALPACA_SYMBOLS": ",".join(SYMBOLS), "ALPACA_DATA_CHANNELS": "trades,quotes",
        "HEALTH_INTERVAL": "1", **design.env,
    }  # fmt: skip
    producer = children.start(f"{design.name}-producer", design.producer, producer_env)
    if design.producer_nice:
        os.setpriority(os.PRIO_PROCESS, producer.pid, design.producer_nice)
    if design.order_producer is not None:
        orders_env = {**producer_env, "PRODUCER_NAME": f"{PRODUCER}-orders"}
        children.start(f"{design.name}-order-producer", design.order_producer, orders_env)
    price_workers = [
        children.procs[f"{design.name}-{name}"].pid for name in design.workers if name != "orders"
    ]
    sampler = ProcessSampler(
        {
            "producer": [producer.pid],
            "worker": price_workers,
            "simulator": [children.procs["simulator"].pid],
            "redis": redis_pids,
        }
    )
    drain = None if design.publishes else PRICES_QUEUE
    broker = env.get("CELERY_PRICES_BROKER_URL")
    queues = redis.Redis.from_url(broker) if broker else client
    ingest = IngestProbe(client, KEYS.producer_health(PRODUCER), design.stream, drain, queues)
    try:
        _until_flowing(prices if design.publishes else None, children, ingest)
        _wait(args.warmup, None, ingest)
        sampler.begin()
        own_cpu, own_t0 = time.process_time(), time.monotonic()  # this process: the probes
        ingest.begin()
        prices.measure(True)
        orders.measure(True)
        _wait(args.duration, sampler, ingest)
        prices.measure(False)
        orders.measure(False)
        cpu = sampler.cpu_percent()
        cpu["probes"] = 100 * (time.process_time() - own_cpu) / (time.monotonic() - own_t0)
        _wait(1.2, None, ingest)  # the heartbeat after the window closes the ingest window
    finally:
        children.stop(f"{design.name}-producer")
    health = json.loads(client.get(KEYS.producer_health(PRODUCER)) or "{}")
    stream = health.get("streams", {}).get(design.stream, {})
    if stream and design.publishes:  # let it drain, to count what was lost
        _settle(prices)
    children.stop()
    prices.stop()
    orders.stop()
    return {
        "design": design.name,
        "offered": rate,
        "prices": prices.summary(),
        "orders": orders.summary() if design.orders else None,
        "cpu_percent": cpu,
        "peak_rss_mb": {k: round(v / 2**20, 1) for k, v in sampler.peak_rss.items()},
        "received": stream.get("received") if design.publishes else None,
        "published": prices.count,
        "ingest_per_s": ingest.rate(),
        "dropped": stream.get("dropped", 0),
    }


def _until_flowing(
    probe: ChannelProbe | None, children: Children, ingest: IngestProbe, limit: float = 120.0
) -> None:
    """Wait for the first event on the channel, or (a design that publishes nothing) the
    first heartbeat (processes start slowly on a busy machine), so that the warm-up counts
    from a running pipeline."""
    deadline = time.monotonic() + limit

    def started() -> bool:
        if probe is not None:
            return bool(probe.count)
        ingest.begin()
        return ingest.started()

    while not started() and time.monotonic() < deadline:
        if dead := children.dead():
            raise RuntimeError(f"{', '.join(dead)} exited; logs in {children.logs}")
        time.sleep(0.1)


def _settle(probe: ChannelProbe, quiet: float = 2.0, limit: float = 60.0) -> None:
    """Wait until no event arrived for ``quiet`` seconds (the pipeline drained)."""
    began, last, seen = time.monotonic(), time.monotonic(), probe.count
    while time.monotonic() - last < quiet and time.monotonic() - began < limit:
        time.sleep(0.2)
        if probe.count != seen:
            seen, last = probe.count, time.monotonic()


def _offered(spec: str, rows: list[dict[str, Any]]) -> float | None:
    """Messages/s for a ``--rates`` entry: a number, ``max`` (0: as fast as the client
    reads), or ``N%`` of the ceiling measured earlier in this run (None before that)."""
    if spec == "max":
        return 0.0
    if spec.endswith("%"):
        ceiling = best_ingest(rows, "ceiling")
        return round(ceiling * float(spec[:-1]) / 100) if ceiling else None
    return float(spec)


def _start(server: RedisServer) -> None:
    try:
        server.start()
    except (OSError, RuntimeError, TimeoutError) as exc:
        unreachable("bench", server.url, f"the embedded Redis did not start: {exc}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``alpaca-broker bench``."""
    parser = argparse.ArgumentParser(prog="alpaca-broker bench", description=__doc__)
    parser.add_argument("--designs", default="pipeline,naive,direct", help="which designs to run")
    parser.add_argument(
        "--rates",
        default="5000,25000",
        help="offered market msgs/s, comma-separated; 'max': as fast as the producer reads; "
        "'80%%': that share of the ceiling design's max in this run (list ceiling first)",
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per run")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring")
    parser.add_argument(
        "--order-rate", type=float, default=20.0, help="synthetic orders/s (pipeline)"
    )
    parser.add_argument(
        "--price-workers",
        "--concurrency",
        dest="concurrency",
        type=int,
        default=2,
        help="price worker processes of the pipeline design (any core count)",
    )
    parser.add_argument("--pool", default="solo", help="pipeline price workers: solo or prefork")
    parser.add_argument(
        "--prefetch",
        type=int,
        default=4,
        help="the price workers' --prefetch-multiplier (batches each holds beyond the one it runs)",
    )
    parser.add_argument(
        "--simulator-options",
        default="",
        help="more simulator options, e.g. '--no-compression --frame-size 100'",
    )
    parser.add_argument(
        "--simulator-nice",
        type=int,
        default=0,
        help="CPU niceness of the simulator (it stands for Alpaca's servers): 10 lets the "
        "pipeline's processes come first on a machine too small for both",
    )
    parser.add_argument(
        "--pool-frames",
        type=int,
        default=200,
        help="frames the simulator draws once and sends over and over (0: it draws every "
        "message anew, as before 2026-11-30)",
    )
    parser.add_argument(
        "--prices-broker",
        choices=("shared", "own"),
        default="shared",
        help="the prices queue's broker: 'shared', the output Redis with its AOF (as compose "
        "and the demo run); 'own', a Redis without AOF beside it (CELERY_PRICES_BROKER_URL, "
        "docs/scaling.md)",
    )
    parser.add_argument("--sample", type=int, default=8, help="time one price event in N")
    parser.add_argument("--out", type=Path, default=Path("bench-out"), help="JSON and PNG go here")
    parser.add_argument(
        "--redis-url",
        help="run against this Redis instead of an embedded one (its database is emptied)",
    )
    args = parser.parse_args(argv)
    if args.redis_url:
        require_redis("bench", args.redis_url)
    designs = all_designs(args.concurrency, args.pool, args.prefetch)
    chosen = [designs[name] for name in args.designs.split(",")]
    rates = args.rates.split(",")
    if any(r.endswith("%") for r in rates) and chosen[0].name != "ceiling":
        parser.error("a rate in % of the ceiling needs --designs to start with ceiling")
    rows: list[dict[str, Any]] = []
    for design in chosen:
        print(f"{design.name}: {design.description}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="alpaca-bench-") as tmp:
        for design in chosen:
            for spec in rates:
                rate = _offered(spec, rows)
                if rate is None or (design.name == "ceiling" and spec.endswith("%")):
                    continue
                # A fresh embedded Redis for every run: one that ran before still rewrites
                # the AOF of what the last run pushed (a forked child, seconds of CPU on a
                # 2-core machine) and holds its memory, which slowed the next run's latency.
                where = Path(tmp) / f"redis-{len(rows)}"
                server: RedisServer | str = args.redis_url or RedisServer(where, fsync="everysec")
                try:
                    if isinstance(server, RedisServer):
                        _start(server)
                    rows.append(run_one(design, rate, args, server, Path(tmp)))
                    if spec.endswith("%"):
                        rows[-1]["relative"] = spec
                except (redis.ConnectionError, redis.TimeoutError) as exc:
                    unreachable("bench", server if isinstance(server, str) else server.url, exc)
                finally:
                    if isinstance(server, RedisServer):
                        server.stop()
                        shutil.rmtree(where, ignore_errors=True)  # its AOF: up to GBs at max
                for line in render(rows[-1:]).splitlines()[2:]:
                    print(line, file=sys.stderr, flush=True)
    print(render(rows))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps(rows, indent=2))
    note = plot(rows, args.out / "bench.png")
    print(f"\nraw figures: {args.out / 'bench.json'}; {note}")
    return 0
