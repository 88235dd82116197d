"""`alpaca-broker demo`: it all starts, events reach Redis on both paths, Ctrl-C ends it all."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import redis

from alpaca_broker.keys import Keys
from alpaca_broker.timestamps import parse_rfc3339
from tests.harness.wait import wait_until
from tests.harness.workers import REPO, process_env

KEYS = Keys()


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def test_demo_delivers_prices_and_orders_and_ctrl_c_leaves_nothing_running(tmp_path: Path) -> None:
    # Configured keys do not take the demo off its simulator: only --alpaca does.
    keys = {"ALPACA_API_KEY": "PKCONFIGUREDKEY00001", "ALPACA_SECRET_KEY": "configured-secret"}
    env = process_env("", FLOWER_BASIC_AUTH="demo:demo-pass", **keys)
    del env["REDIS_URL"]  # the demo starts its own embedded Redis
    out_path = tmp_path / "demo.out"
    out = out_path.open("w+")

    def text() -> str:
        return out_path.read_text()

    demo = subprocess.Popen(
        [sys.executable, "-m", "alpaca_broker", "demo", "--flower-port", "0", "--interval", "1"],
        cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_until(lambda: "Watch:" in text(), 30, message="demo start-up lines")
        url = next(line.split()[1] for line in text().splitlines() if line.startswith("Redis:"))
        assert "Source:    simulator ws://127.0.0.1:" in text()
        client = redis.Redis.from_url(url, decode_responses=True)
        wait_until(lambda: client.keys(KEYS.latest("*")), 60, message=text())
        wait_until(lambda: client.xlen(KEYS.orders_events) > 0, 60, message=text())
        event = json.loads(client.xrange(KEYS.orders_events, count=1)[0][1]["event"])
        assert event["type"] == "order_update"
        _assert_market_time_is_wall_clock_time(client)
        _assert_the_watch_command_works_as_shown_from_a_fresh_shell(text(), tmp_path)
        wait_until(lambda: len(_status_lines(text())) >= 3, 30, message=text())
        assert "\r" not in text()  # piped: one plain line per status, no redraw
        children = _descendants(demo.pid)
        ports = {_port(c) for p in children for c in _connections(p) if c.status == "LISTEN"}
        assert len(children) >= 5
        demo.send_signal(signal.SIGINT)
        assert demo.wait(40) == 0
    finally:
        if demo.poll() is None:
            demo.kill()
    _gone, alive = psutil.wait_procs(children, timeout=10)
    assert alive == []
    assert "stopping..." in text()
    listening = {_port(c) for c in psutil.net_connections() if c.status == "LISTEN"}
    assert ports
    assert not ports & listening


def _status_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "| queues " in line]


def _assert_market_time_is_wall_clock_time(client: redis.Redis) -> None:
    """Trades and quotes carry the market's time: within seconds of when they were read."""
    events = [
        json.loads(raw)
        for key in client.keys(KEYS.latest("*"))
        for kind, raw in client.hgetall(key).items()
        if kind in ("trade", "quote")
    ]
    assert events
    for event in events:
        skew_s = (parse_rfc3339(event["timestamp"]) - parse_rfc3339(event["received_at"])) / 1e9
        assert abs(skew_s) < 5, event


def _assert_the_watch_command_works_as_shown_from_a_fresh_shell(text: str, cwd: Path) -> None:
    shown = next(line for line in text.splitlines() if line.startswith("Watch:"))
    command = shown.removeprefix("Watch:").strip()
    fresh = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp")}
    done = subprocess.run(
        ["/bin/sh", "-c", f"{command} -n 1"],
        cwd=cwd, env=fresh, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, (command, done.stderr)
    assert json.loads(done.stdout)["symbol"]


def _port(conn: Any) -> int:
    return int(conn.laddr.port)


def _connections(proc: psutil.Process) -> list[Any]:
    try:
        return proc.net_connections(kind="inet")
    except psutil.Error:
        return []


def test_demo_with_alpaca_and_no_keys_stops_at_once_naming_the_variable(tmp_path: Path) -> None:
    env = process_env("")
    del env["REDIS_URL"]
    argv = [sys.executable, "-m", "alpaca_broker", "demo", "--alpaca", "--flower-port", "0"]
    done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "ALPACA_API_KEY" in done.stderr
    assert "Redis:" not in done.stdout  # nothing was started


def test_demo_target_exists_in_the_makefile() -> None:
    assert "alpaca-broker demo" in (REPO / "Makefile").read_text()


def test_demo_with_a_standby_and_every_stream_shows_a_takeover(tmp_path: Path) -> None:
    env = process_env("", FLOWER_BASIC_AUTH="demo:demo-pass")
    del env["REDIS_URL"]
    out_path = tmp_path / "demo.out"
    argv = [
        sys.executable, "-m", "alpaca_broker", "demo", "--flower-port", "0", "--interval", "1",
        "--standby", "--streams", "prices,orders,crypto,options,news", "--rate", "50",
    ]  # fmt: skip
    with out_path.open("w+") as out:
        demo = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: "Standby:" in out_path.read_text(), 30, message="start-up lines")
        text = out_path.read_text()
        url = next(line.split()[1] for line in text.splitlines() if line.startswith("Redis:"))
        client = redis.Redis.from_url(url, decode_responses=True)
        wait_until(lambda: client.get(KEYS.lease("demo")), 30, message="a lease holder")
        wait_until(lambda: client.hgetall(KEYS.latest("BTC/USD")), 60, message=out_path.read_text())
        wait_until(lambda: client.xlen(KEYS.news_events) > 0, 90, message="news")
        lease = json.loads(client.get(KEYS.lease("demo")) or "{}")
        pids = dict(
            (name, int(pid))
            for name, pid in (
                part.strip().split(" pid ")
                for part in text.split("Standby:")[1].split(";")[0].split(",")
            )
        )
        os.kill(pids[lease["holder"]], signal.SIGKILL)
        wait_until(
            lambda: (
                json.loads(client.get(KEYS.lease("demo")) or "{}").get("epoch", 0) > lease["epoch"]
            ),
            30,
            message="the standby took the lease",
        )
        # The standby, or the killed one the demo started again, whichever wins the lease.
        epoch = lease["epoch"] + 1
        wait_until(lambda: f"up (active, lease epoch {epoch})" in out_path.read_text(), 30)
        demo.send_signal(signal.SIGINT)
        demo.wait(40)
    finally:
        if demo.poll() is None:
            demo.kill()
