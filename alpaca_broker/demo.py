"""``alpaca-broker demo``: the whole pipeline on one machine, no account and no Docker needed.

Starts an embedded Redis (unless ``REDIS_URL`` is set), the simulator with a lively market
and order flow (unless real keys are configured and ``--alpaca`` or no ``--simulator``),
the producer, one worker per queue and Flower; prints the URLs and a live summary line;
Ctrl-C stops every process and leaves nothing running.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

import redis

from alpaca_broker.errors import ConfigError
from alpaca_broker.health import collect_queues
from alpaca_broker.keys import Keys
from alpaca_broker.redis_server import RedisServer, free_port
from alpaca_broker.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[1]
DEMO_KEY, DEMO_SECRET = "demo-key", "demo-secret"  # the simulator accepts any credentials


class Processes:
    """Child processes, each in its own session so that stopping one stops its children."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        with (self.logs / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(
                argv,
                env=env,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.children.append((name, proc))
        return proc

    def dead(self) -> list[str]:
        return [name for name, proc in self.children if proc.poll() is not None]

    def stop_all(self, timeout: float = 15.0) -> None:
        for _, proc in reversed(self.children):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for _, proc in reversed(self.children):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.1, deadline - time.monotonic()))
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
            with contextlib.suppress(ProcessLookupError):  # a pool child left behind
                os.killpg(proc.pid, signal.SIGKILL)


def _simulator(procs: Processes, env: dict[str, str], rate: float) -> dict[str, str]:
    argv = [
        sys.executable, "-m", "alpaca_broker", "simulate", "--port", "0", "--rate", str(rate),
        "--order-rate", "2", "--clock-speed", "60", "--log-level", "WARNING",
    ]  # fmt: skip
    with (procs.logs / "simulator.log").open("ab") as log:
        proc = subprocess.Popen(
            argv, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=log, start_new_session=True
        )
    procs.children.append(("simulator", proc))
    assert proc.stdout is not None
    return dict(proc.stdout.readline().decode().strip().split("=", 1) for _ in range(3))


def _has_keys(settings: Settings) -> bool:
    try:
        settings.credentials()
    except ConfigError:  # none, or empty as in a fresh copy of .env.example
        return False
    return True


def _shown(url: str) -> str:
    """``url`` with its password masked, for printing."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")).geturl()


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
    health = "producer up" if doc else "producer: no heartbeat"
    return f"{' | '.join(parts) or 'starting'} | queues {depths} | {health}"


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``alpaca-broker demo``."""
    parser = argparse.ArgumentParser(prog="alpaca-broker demo", description=__doc__)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--simulator", action="store_true", help="use the local simulator")
    which.add_argument("--alpaca", action="store_true", help="use Alpaca (keys from .env)")
    parser.add_argument("--rate", type=float, default=500, help="simulated messages/s")
    parser.add_argument("--flower-port", type=int, default=5555, help="0 picks a free port")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between summaries")
    args = parser.parse_args(argv)
    settings = load_settings()
    use_sim = args.simulator or (not args.alpaca and not _has_keys(settings))
    stop = False

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    work = Path(tempfile.mkdtemp(prefix="alpaca-demo-"))
    procs = Processes(work)
    server = None
    # REDIS_URL from the environment or .env; without one, an embedded Redis.
    redis_url = settings.redis_url if "redis_url" in settings.model_fields_set else None
    try:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if not redis_url:
            server = RedisServer(work / "redis", fsync="everysec")
            server.start()
            redis_url = server.url
            env["CELERY_BROKER_URL"] = ""  # the embedded Redis is the broker, whatever .env says
        env["REDIS_URL"] = redis_url
        env.setdefault("HEALTH_INTERVAL", "1")  # the summary line reads the heartbeat
        if use_sim:
            env.update(_simulator(procs, env, args.rate))
            env.update(ALPACA_API_KEY=DEMO_KEY, ALPACA_SECRET_KEY=DEMO_SECRET)
            env.setdefault("ALPACA_SYMBOLS", "AAPL,MSFT,NVDA,TSLA,SPY")
        given_auth = env.get("FLOWER_BASIC_AUTH")
        flower_auth = given_auth or f"demo:{secrets.token_urlsafe(8)}"
        flower_port = args.flower_port or free_port()
        celery = [sys.executable, "-m", "celery", "-A", "celery_app"]
        worker = [*celery, "worker", "--without-gossip", "--without-mingle", "-c", "1"]
        procs.start(
            "worker-prices",
            [*worker, "-Q", "prices", "-n", "prices@%h", "-P", "solo", "-l", "WARNING"],
            env,
        )
        procs.start(
            "worker-orders", [*worker, "-Q", "orders", "-n", "orders@%h", "-E", "-l", "INFO"], env
        )
        procs.start("producer", [sys.executable, "-m", "alpaca_broker", "producer"], env)
        procs.start(
            "flower",
            [*celery, "flower", f"--port={flower_port}", "--address=127.0.0.1"],
            {**env, "FLOWER_BASIC_AUTH": flower_auth},
        )
        user, password = flower_auth.split(":", 1)
        login = f"{user} / {'FLOWER_BASIC_AUTH' if given_auth else password}"
        print(f"Redis:     {_shown(redis_url)}", flush=True)
        print(f"Flower:    http://127.0.0.1:{flower_port}/  (login {login})", flush=True)
        print(f"Source:    {'simulator ' + env['ALPACA_DATA_STREAM_URL'] if use_sim else 'Alpaca'}")
        print(f"Logs:      {work}")
        print(f"Watch:     REDIS_URL={_shown(redis_url)} alpaca-broker tail prices", flush=True)
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        keys, previous = Keys(settings.redis_key_prefix), dict[str, int]()
        last = time.monotonic()
        while not stop:
            time.sleep(0.2)
            if procs.dead():
                print(f"\nstopped: {', '.join(procs.dead())} exited (logs in {work})", flush=True)
                return 1
            now = time.monotonic()
            if now - last >= args.interval:
                line = summary(client, keys, settings.producer_name, previous, now - last)
                last = now
                end = "\r" if sys.stdout.isatty() else "\n"
                print(f"{line:<120}", end=end, flush=True)
        print("\nstopping...", flush=True)
        return 0
    finally:
        procs.stop_all()
        if server is not None:
            server.stop()
