"""``alpaca-broker demo --alpaca`` started outside the repository: each child holds only the
secrets it needs, and its Flower is as locked as ``celery -A celery_app flower`` anywhere.

The "Alpaca" here is the simulator, accepting only the configured key and secret, so that
orders flowing prove the producer got both: the key from the environment, the secret from a
``.env`` in the demo's working directory. Neither may reach a worker or Flower: not in their
environment, and not through that ``.env`` either (the environment wins over ``.env``, and
theirs sets the credentials empty).
"""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import redis
import requests

from alpaca_broker.children import ALPACA_CREDENTIALS
from alpaca_broker.keys import Keys
from simulator import Credentials, Simulator
from tests.harness.wait import wait_until
from tests.harness.workers import REPO, process_env

pytestmark = pytest.mark.slow

KEY, SECRET = "PKDEMOALPACAKEY00001", "demo-alpaca-secret-from-dotenv-0001"
LOGIN = ("demo", "demo-pass-0001")
KEYS = Keys()


def _family(pid: int) -> dict[str, psutil.Process]:
    """The demo's children by role: producer, worker-prices, worker-orders, flower."""
    found: dict[str, psutil.Process] = {}
    for proc in psutil.Process(pid).children(recursive=True):
        try:
            argv = proc.cmdline()
        except psutil.Error:
            continue
        if "producer" in argv:
            found.setdefault("producer", proc)
        elif "flower" in argv:
            found.setdefault("flower", proc)
        elif "worker" in argv and "-Q" in argv:
            found.setdefault(f"worker-{argv[argv.index('-Q') + 1]}", proc)
    return found


def _secret_seen(cwd: Path, environ: dict[str, str]) -> str:
    """ALPACA_SECRET_KEY as a process of ``environ`` in ``cwd`` (its .env) reads it."""
    probe = (
        "from alpaca_broker.settings import load_settings as s; k = s().alpaca_secret_key; "
        "print(k.get_secret_value() if k is not None else '(unset)')"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


def test_demo_with_alpaca_outside_the_repository_scopes_secrets_and_locks_flower(
    tmp_path: Path,
) -> None:
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    assert not cwd.is_relative_to(REPO)
    with Simulator(credentials=Credentials(KEY, SECRET), rate=20, order_rate=2) as sim:
        urls = "\n".join(sim.env_lines())
        (cwd / ".env").write_text(f"ALPACA_SECRET_KEY={SECRET}\n{urls}\n")
        env = process_env("", ALPACA_API_KEY=KEY, FLOWER_BASIC_AUTH=":".join(LOGIN))
        del env["REDIS_URL"]  # the demo's own embedded Redis
        out_path = tmp_path / "demo.out"
        argv = [sys.executable, "-m", "alpaca_broker", "demo", "--alpaca", "--flower-port", "0"]
        with out_path.open("w") as out:
            demo = subprocess.Popen(
                [*argv, "--interval", "1"], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        try:
            wait_until(lambda: "Watch:" in out_path.read_text(), 60, message="start-up lines")
            text = out_path.read_text()
            url = re.search(r"^Redis:\s+(\S+)", text, re.MULTILINE)
            port = re.search(r"^Flower:\s+http://127\.0\.0\.1:(\d+)/", text, re.MULTILINE)
            assert url, text
            assert port, text
            client = redis.Redis.from_url(url.group(1), decode_responses=True)
            wait_until(lambda: client.xlen(KEYS.orders_events) > 0, 60, message=text)

            family = _family(demo.pid)
            assert set(family) == {"producer", "worker-prices", "worker-orders", "flower"}
            environ = {role: proc.environ() for role, proc in family.items()}
            assert environ["producer"]["ALPACA_API_KEY"] == KEY
            for role in ("worker-prices", "worker-orders", "flower"):
                held = {name: environ[role].get(name) for name in ALPACA_CREDENTIALS}
                assert held == dict.fromkeys(ALPACA_CREDENTIALS, ""), role
            # The empty values hide the .env's secret from their settings too.
            assert _secret_seen(cwd, environ["worker-orders"]) == ""
            assert _secret_seen(cwd, environ["producer"]) == SECRET
            assert "FLOWER_BASIC_AUTH" in environ["flower"]
            assert all("FLOWER_BASIC_AUTH" not in environ[r] for r in environ if r != "flower")

            flower = f"http://127.0.0.1:{port.group(1)}"
            listening = {
                c.laddr.ip
                for c in family["flower"].net_connections(kind="inet")
                if c.status == psutil.CONN_LISTEN
            }
            assert listening == {"127.0.0.1"}
            forged = requests.post(
                f"{flower}/api/task/async-apply/orders.publish_event",
                data="{}",
                auth=LOGIN,
                timeout=10,
            )
            assert forged.status_code == 404
            assert requests.get(f"{flower}/metrics", timeout=10).status_code == 401
            assert requests.get(f"{flower}/api/workers", auth=LOGIN, timeout=10).ok
            demo.send_signal(signal.SIGINT)
            assert demo.wait(40) == 0
        finally:
            if demo.poll() is None:  # failed part-way: leave no child of it running
                children = psutil.Process(demo.pid).children(recursive=True)
                demo.kill()
                demo.wait(10)
                for child in children:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        child.kill()
