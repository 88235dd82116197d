"""``alpaca-broker demo``: the whole pipeline on one machine, no account and no Docker needed.

Starts an embedded Redis (unless ``REDIS_URL`` is set), the simulator with a lively market
and order flow and its own credentials (always, whatever keys are configured, unless
``--alpaca`` is given: then Alpaca with the configured keys and URLs), the producer, one
worker per queue and Flower; prints the URLs and a live summary line; Ctrl-C stops every
process and leaves nothing running.

While it runs, ``alpaca-broker subscribe prices NVDA`` (with the ``REDIS_URL`` it prints, as
in its ``Watch:`` line) adds NVDA to the price stream on its open connection;
``alpaca-broker subscriptions`` shows what Alpaca confirmed.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shlex
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TextIO

import redis

from alpaca_broker.children import Children, scoped_env
from alpaca_broker.errors import ConfigError
from alpaca_broker.health import collect_queues
from alpaca_broker.keys import Keys
from alpaca_broker.redis_client import connect
from alpaca_broker.redis_server import RedisServer, free_port, masked, require_redis, unreachable
from alpaca_broker.settings import Settings, exit_on_config_error, load_settings
from simulator import launcher

DEMO_KEY, DEMO_SECRET = "demo-key", "demo-secret"  # the simulator accepts any credentials
CLEAR_LINE = "\r\x1b[K"  # back to the line's start, erase it


def _simulator(children: Children, env: dict[str, str], rate: float, speed: float) -> None:
    options = ["--port", "0", "--rate", str(rate), "--order-rate", "2", "--log-level", "WARNING"]
    argv = [*options, "--clock-speed", str(speed)]
    # Any credentials, the demo's own included, whatever SIMULATOR_SECRET says elsewhere.
    sim_env = {**scoped_env(env), "SIMULATOR_SECRET": ""}
    sim = launcher.launch(argv, sim_env, children.log("simulator"))
    children.adopt("simulator", sim.proc)
    env.update(sim.env)


def tail_command(redis_url: str) -> str:
    """A ``tail prices`` command line that works as shown from any shell: the absolute path
    of this installation's ``alpaca-broker`` (or ``python -m alpaca_broker``)."""
    script = Path(sys.executable).parent / "alpaca-broker"
    program = [str(script)] if script.exists() else [sys.executable, "-m", "alpaca_broker"]
    return f"REDIS_URL={masked(redis_url)} {shlex.join(program)} tail prices"


def show_status(line: str, out: TextIO) -> None:
    """Redraw the status line in place on a terminal; one line each time when piped."""
    if out.isatty():
        print(f"{CLEAR_LINE}{line}", end="", file=out, flush=True)
    else:
        print(line, file=out, flush=True)


def summary(
    client: redis.Redis, keys: Keys, name: str, previous: dict[str, int], seconds: float
) -> str:
    """One status line: events/s per path, queue depths and the producer's stream states."""
    raw = client.get(keys.producer_health(name))
    doc = json.loads(raw) if raw else {}
    parts = []
    for stream, state in doc.get("streams", {}).items():
        enqueued = int(state.get("enqueued", 0))
        rate = (enqueued - previous.get(stream, enqueued)) / seconds
        previous[stream] = enqueued
        parts.append(f"{stream} {state.get('state')} {rate:,.0f}/s")
    depths = " ".join(f"{q}={n}" for q, n in collect_queues(client)["depth"].items())
    health = f"producer {name} up" if doc else f"producer {name}: no heartbeat"
    if doc.get("role"):
        health += f" ({doc['role']}, lease epoch {doc.get('epoch')})"
    return f"{' | '.join(parts) or 'starting'} | queues {depths} | {health}"


def _holder(client: redis.Redis, keys: Keys, leased: bool, default: str) -> str:
    """The producer whose heartbeat the status line shows: the lease holder when leased."""
    if not leased:
        return default
    raw = client.get(keys.lease("demo"))
    holder: str = json.loads(raw)["holder"] if raw else default
    return holder


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``alpaca-broker demo``."""
    parser = argparse.ArgumentParser(prog="alpaca-broker demo", description=__doc__)
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--simulator", action="store_true", help="the local simulator (the default; a no-op)"
    )
    which.add_argument(
        "--alpaca",
        action="store_true",
        help="use Alpaca instead of the simulator (keys and URLs from the environment or .env)",
    )
    parser.add_argument("--rate", type=float, default=500, help="simulated messages/s")
    parser.add_argument(
        "--clock-speed", type=float, default=1.0, help="simulated market clock (1: wall clock)"
    )
    parser.add_argument("--flower-port", type=int, default=5555, help="0 picks a free port")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between summaries")
    parser.add_argument(
        "--streams",
        default="prices,orders",
        help="the producer's streams, any of prices,orders,crypto,options,news",
    )
    parser.add_argument(
        "--standby",
        action="store_true",
        help="two producers with one lease: kill the holder to watch the standby take over",
    )
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        if args.alpaca:
            settings.credentials()  # Alpaca needs the configured keys: say so before starting
    except ConfigError as exc:
        exit_on_config_error(exc)
    # REDIS_URL from the environment or .env; without one, an embedded Redis.
    redis_url = settings.redis_url if "redis_url" in settings.model_fields_set else None
    if redis_url:
        require_redis("demo", redis_url)
    stop = False

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    work = Path(tempfile.mkdtemp(prefix="alpaca-demo-"))
    server = None
    with Children(work) as children:
        try:
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            if not redis_url:
                server = RedisServer(work / "redis", fsync="everysec")
                try:
                    server.start()
                except (OSError, RuntimeError, TimeoutError) as exc:
                    unreachable("demo", server.url, f"the embedded Redis did not start: {exc}")
                redis_url = server.url
                env["CELERY_BROKER_URL"] = (
                    ""  # the embedded Redis is the broker, whatever .env says
                )
            env["REDIS_URL"] = redis_url
            return _run(args, settings, env, children, lambda: stop)
        finally:
            children.stop()
            if server is not None:
                server.stop()


def _run(
    args: argparse.Namespace,
    settings: Settings,
    env: dict[str, str],
    children: Children,
    stopped: Callable[[], bool],
) -> int:
    """Start the processes, print where to look, then a status line until ``stopped()``."""
    redis_url, work = env["REDIS_URL"], children.logs
    env.setdefault("HEALTH_INTERVAL", "1")  # the summary line reads the heartbeat
    use_sim = not args.alpaca  # no account needed: the simulator, whatever keys are configured
    if use_sim:
        _simulator(children, env, args.rate, args.clock_speed)
        env.update(ALPACA_API_KEY=DEMO_KEY, ALPACA_SECRET_KEY=DEMO_SECRET)
        env.setdefault("ALPACA_SYMBOLS", "AAPL,MSFT,NVDA,TSLA,SPY")
        env.setdefault("ALPACA_CRYPTO_SYMBOLS", "BTC/USD,ETH/USD")
        env.setdefault("ALPACA_OPTION_SYMBOLS", "AAPL261218C00150000,SPY261218P00600000")
    given_auth = env.get("FLOWER_BASIC_AUTH")
    flower_auth = given_auth or f"demo:{secrets.token_urlsafe(8)}"
    flower_port = args.flower_port or free_port()
    celery = [sys.executable, "-m", "celery", "-A", "celery_app"]
    worker = [*celery, "worker", "--without-gossip", "--without-mingle", "-c", "1"]
    # Each child gets only the secrets it needs: the Alpaca keys reach the producers alone,
    # Flower's login Flower alone (alpaca_broker.children.scoped_env).
    worker_env = scoped_env(env)
    children.start(
        "worker-prices",
        [*worker, "-Q", "prices", "-n", "prices@%h", "-P", "solo", "-l", "WARNING"],
        worker_env,
    )
    children.start(
        "worker-orders",
        [*worker, "-Q", "orders", "-n", "orders@%h", "-E", "-l", "INFO"],
        worker_env,
    )
    producer = [sys.executable, "-m", "alpaca_broker", "producer", "--streams", args.streams]
    names = ("primary", "standby") if args.standby else (settings.producer_name,)
    producers: dict[str, dict[str, str]] = {}
    for name in names:
        lease = {"PRODUCER_LEASE": "demo"} if args.standby else {}
        producer_env = scoped_env(env, alpaca_credentials=True)
        producers[f"producer-{name}"] = {**producer_env, "PRODUCER_NAME": name, **lease}
        children.start(f"producer-{name}", producer, producers[f"producer-{name}"])
    children.start(
        "flower",
        [*celery, "flower", f"--port={flower_port}", "--address=127.0.0.1"],
        scoped_env({**env, "FLOWER_BASIC_AUTH": flower_auth}, flower_login=True),
    )
    user, password = flower_auth.split(":", 1)
    login = f"{user} / {'FLOWER_BASIC_AUTH' if given_auth else password}"
    print(f"Redis:     {masked(redis_url)}", flush=True)
    print(f"Flower:    http://127.0.0.1:{flower_port}/  (login {login})", flush=True)
    print(f"Source:    {'simulator ' + env['ALPACA_DATA_STREAM_URL'] if use_sim else 'Alpaca'}")
    print(f"Logs:      {work}")
    print(f"Watch:     {tail_command(redis_url)}", flush=True)
    if args.standby:
        pids = ", ".join(f"{n} pid {children.procs[f'producer-{n}'].pid}" for n in names)
        print(f"Standby:   {pids}; kill -9 the holder to watch a takeover", flush=True)
    client = connect(settings.model_copy(update={"redis_url": redis_url}), decode_responses=True)
    keys, previous = Keys(settings.redis_key_prefix), dict[str, int]()
    last = time.monotonic()
    while not stopped():
        time.sleep(0.2)
        dead = children.dead()
        if args.standby and dead and all(name in producers for name in dead):
            for name in dead:  # one of the set was killed: back as a standby, the set stays two
                print(f"\n{name} exited; starting it again as a standby", flush=True)
                children.forget(name)
                children.start(name, producer, producers[name])
        elif dead:
            print(f"\nstopped: {', '.join(dead)} exited (logs in {work})", flush=True)
            return 1
        now = time.monotonic()
        if now - last >= args.interval:
            try:
                line = summary(client, keys, _holder(client, keys, args.standby, names[0]),
                               previous, now - last)  # fmt: skip
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                unreachable("demo", redis_url, exc)
            last = now
            show_status(line, sys.stdout)
    print("\nstopping...", flush=True)
    return 0
