"""Flower as the project's Celery app starts it (``celery -A celery_app flower``, its compose
command) is locked whatever its working directory: every Flower here starts in an empty
directory (no ``flowerconfig.py``, no ``.env``). It refuses to start without a login, listens
on loopback unless told otherwise, asks for the login on every page (``/metrics`` included;
only ``/healthcheck`` is open), and its HTTP API cannot run, revoke, abort or limit a task,
nor shut down or resize a worker, so a Flower login cannot forge an order event.

Each Flower here runs on a Redis of its own with no worker, so a task it sent would stay in
its queue, and a broadcast (revoke, shutdown) would reach a subscriber to every channel.
The same requests to a stock Flower (the same Celery configuration, built without the lock)
send them: the checks can see it.
"""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis
import requests

from alpaca_broker.redis_server import RedisServer, free_port
from tests.harness.browser import chromium_or_skip
from tests.harness.compose import command, environment, local_argv, service_env
from tests.harness.wait import wait_until

pytestmark = pytest.mark.slow

AUTH = ("ops", "s3cret-flower")
FORGED = {  # a trade_updates data object, as the order producer hands it over
    "event": "fill",
    "qty": "100000",
    "price": "0.01",
    "order": {"id": "forged-order", "symbol": "AAPL", "filled_qty": "100000", "status": "filled"},
}
TASK_ID = "00000000-0000-0000-0000-000000000001"
WORKER = "orders@nowhere"
# Every route of Flower 2.x that acts rather than reads.
ACTIONS = (
    "/api/task/apply/orders.publish_event",
    "/api/task/async-apply/orders.publish_event",
    "/api/task/send-task/orders.publish_event",
    f"/api/task/revoke/{TASK_ID}?terminate=true",
    f"/api/task/abort/{TASK_ID}",
    "/api/task/timeout/orders.publish_event?soft=1&workername=" + WORKER,
    "/api/task/rate-limit/orders.publish_event?ratelimit=1&workername=" + WORKER,
    f"/api/worker/shutdown/{WORKER}",
    f"/api/worker/pool/restart/{WORKER}",
    f"/api/worker/pool/grow/{WORKER}?n=1",
    f"/api/worker/pool/shrink/{WORKER}?n=1",
    f"/api/worker/pool/autoscale/{WORKER}?min=1&max=2",
    f"/api/worker/queue/add-consumer/{WORKER}?queue=x",
    f"/api/worker/queue/cancel-consumer/{WORKER}?queue=orders",
)
# Every page and read API of Flower: each needs the login.
PAGES = (
    "/", "/workers", f"/worker/{WORKER}", f"/task/{TASK_ID}", "/tasks", "/tasks/datatable",
    "/broker", "/api/workers", "/api/tasks", "/api/task/types", "/api/queues/length",
    f"/api/task/info/{TASK_ID}", f"/api/task/result/{TASK_ID}", "/metrics",
)  # fmt: skip


# Celery's remote-control commands that act (Flower also broadcasts reads on its own).
ACTING = {"revoke", "revoke_by_stamped_headers", "terminate", "shutdown", "pool_restart",
          "pool_grow", "pool_shrink", "autoscale", "add_consumer", "cancel_consumer",
          "time_limit", "rate_limit"}  # fmt: skip

STOCK_APP = '''\
"""The project's Celery configuration, built without celery_app's Flower lock."""
from celery_app.config import create_app

app = create_app()
'''


def _method(data: str) -> str:
    """The remote-control method of a broadcast message on kombu's pidbox channel."""
    try:
        envelope = json.loads(data)
        body = json.loads(base64.b64decode(envelope["body"]))
        return str(body.get("method"))
    except (ValueError, KeyError, TypeError):
        return f"unparsed: {data[:80]}"


def _empty_directory(tmp_path: Path, name: str = "cwd") -> Path:
    cwd = tmp_path / name
    cwd.mkdir()
    return cwd


def flower_env(compose: dict[str, Any], redis_url: str, **values: str) -> dict[str, str]:
    """The compose Flower's environment (interpolated with ``values``) on ``redis_url``; no
    ``FLOWER_*`` variable of the caller's own leaks in."""
    settings = environment(compose, "flower", {"FLOWER_BASIC_AUTH": ":".join(AUTH), **values})
    settings = {k: v for k, v in settings.items() if k not in ("REDIS_URL", "CELERY_BROKER_URL")}
    env = service_env(redis_url, **settings)
    for name in [n for n in env if n.startswith("FLOWER_")]:
        del env[name]
    env.update({k: v for k, v in settings.items() if k.startswith("FLOWER_")})
    env.update({k: v for k, v in values.items() if k.startswith("FLOWER_")})
    return env


def flower_argv(compose: dict[str, Any], *extra: str, app: str = "celery_app") -> list[str]:
    """Flower's compose command less its container-only ``--address=0.0.0.0``."""
    argv = local_argv(command(compose, "flower"))
    assert argv[:3] == ["celery", "-A", "celery_app"]
    return [argv[0], "-A", app, *argv[3:], *extra]


class Bare:
    """A Flower started in ``cwd`` on its own Redis, and a subscriber to every channel of
    that Redis."""

    def __init__(
        self,
        compose: dict[str, Any],
        directory: Path,
        cwd: Path,
        *extra: str,
        app: str = "celery_app",
        **values: str,
    ) -> None:
        self.server = RedisServer(directory / "redis")
        self.server.start()
        self.client = redis.Redis.from_url(self.server.url, decode_responses=True)
        self.pubsub = self.client.pubsub()
        self.pubsub.psubscribe("*")
        self.port = free_port()
        self.host = values.get("FLOWER_ADDRESS", "127.0.0.1")
        self.url = f"http://{self.host}:{self.port}"
        env = flower_env(compose, self.server.url, FLOWER_PORT=str(self.port), **values)
        self.log_path = directory / "flower.log"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                flower_argv(compose, *extra, app=app),
                cwd=cwd,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_until(
            lambda: self._alive() and self._ok("/healthcheck"),
            30,
            interval=0.1,
            message=f"Flower up (its log: {self.log_path})",
        )

    def _alive(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"Flower exited {self.proc.returncode}: {self.log_path.read_text()}")
        return True

    def _ok(self, path: str) -> bool:
        try:
            return requests.get(f"{self.url}{path}", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def get(self, path: str, auth: tuple[str, str] | None = AUTH) -> requests.Response:
        return requests.get(f"{self.url}{path}", auth=auth, timeout=10)

    def post(self, path: str) -> requests.Response:
        forging = "apply/" in path or "/send-task/" in path
        body = json.dumps({"args": [FORGED, 1, "stream"]} if forging else {})
        return requests.post(f"{self.url}{path}", data=body, auth=AUTH, timeout=10)

    def listening(self) -> set[tuple[str, int]]:
        return {
            (c.laddr.ip, c.laddr.port)
            for c in psutil.Process(self.proc.pid).net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN
        }

    def queued(self) -> dict[str, int]:
        return {
            q: self.client.llen(q) for q in ("orders", "prices", "celery") if self.client.llen(q)
        }

    def broadcasts(self) -> list[str]:
        """The acting remote-control commands published since the last call (up to a probe
        of our own: Redis delivers in order, so anything
        published earlier has arrived before it)."""
        self.client.publish("probe", "barrier")
        seen: list[str] = []

        def barrier() -> bool:
            message = self.pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
            if message is None:
                return False
            if message["channel"] == "probe":
                return True
            seen.append(_method(str(message["data"])))
            return False

        wait_until(barrier, 10, interval=0, message="our own probe message")
        return [method for method in seen if method in ACTING or method.startswith("unparsed")]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.pubsub.close()
        self.server.stop()


@pytest.fixture
def shipped(compose: dict[str, Any], tmp_path: Path) -> Iterator[Bare]:
    bare = Bare(compose, tmp_path, _empty_directory(tmp_path))
    yield bare
    bare.close()


def test_flower_started_in_an_empty_directory_listens_on_loopback_only(shipped: Bare) -> None:
    assert shipped.listening() == {("127.0.0.1", shipped.port)}


def test_flower_listens_where_it_is_told(compose: dict[str, Any], tmp_path: Path) -> None:
    # 127.0.0.2 is loopback too (all of 127/8 on Linux): safe to bind on a shared host.
    told = Bare(compose, tmp_path, _empty_directory(tmp_path), FLOWER_ADDRESS="127.0.0.2")
    try:
        assert told.listening() == {("127.0.0.2", told.port)}
    finally:
        told.close()


def test_every_flower_page_needs_the_login(shipped: Bare) -> None:
    for path in PAGES:
        assert shipped.get(path, auth=None).status_code == 401, path
        assert shipped.get(path, auth=(AUTH[0], "wrong")).status_code == 401, path
        # With it, the page answers (404: no such worker or task; 400: a table query
        # without its arguments; 503: no result backend): never 401.
        assert shipped.get(path).status_code != 401, path
    for path in ("/", "/workers", "/tasks", "/broker", "/api/workers", "/metrics"):
        assert shipped.get(path).status_code == 200, path
    assert "flower_" in shipped.get("/metrics").text
    health = shipped.get("/healthcheck", auth=None)
    assert (health.status_code, health.text) == (200, "OK")  # open, for the healthcheck


def test_flower_as_shipped_cannot_apply_send_revoke_or_control_anything(shipped: Bare) -> None:
    shipped.broadcasts()
    answers = {path: shipped.post(path).status_code for path in ACTIONS}

    assert answers == {path: 404 for path in ACTIONS}
    assert shipped.queued() == {}  # no task sent, the forged fill above included
    assert shipped.broadcasts() == []  # no revoke, shutdown or pool command broadcast
    # Reading still works, behind the login.
    assert shipped.get("/api/tasks").status_code == 200
    assert shipped.get("/api/tasks", auth=None).status_code == 401


@pytest.mark.parametrize(
    "login",
    [None, "", "ops", "ops:", ":s3cret", "ops:s3cret,:"],
    ids=["unset", "empty", "no-password", "empty-password", "empty-user", "one-pair-empty"],
)
def test_flower_without_a_login_refuses_to_start_naming_the_variable(
    compose: dict[str, Any], tmp_path: Path, login: str | None
) -> None:
    port = free_port()
    env = flower_env(compose, "redis://127.0.0.1:1/0", FLOWER_PORT=str(port))
    env.pop("FLOWER_BASIC_AUTH")
    if login is not None:
        env["FLOWER_BASIC_AUTH"] = login
    done = subprocess.run(
        flower_argv(compose),
        cwd=_empty_directory(tmp_path),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("alpaca-broker: configuration error: FLOWER_BASIC_AUTH: ")
    assert "Traceback" not in done.stdout + done.stderr


def test_a_stock_flower_would_send_the_forged_fill_and_the_revoke(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    """The control: the same Celery configuration without the lock (an app module of its
    own, in Flower's working directory) does act, and the checks above would see it."""
    cwd = _empty_directory(tmp_path)
    (cwd / "stock_app.py").write_text(STOCK_APP)
    stock = Bare(compose, tmp_path, cwd, app="stock_app", FLOWER_ADDRESS="127.0.0.1")
    try:
        stock.broadcasts()
        forged = stock.post("/api/task/async-apply/orders.publish_event")
        assert forged.status_code == 200, forged.text
        assert stock.queued() == {"orders": 1}
        body = json.loads(stock.client.lindex("orders", 0) or "{}")
        assert body["headers"]["task"] == "orders.publish_event"
        assert stock.post(f"/api/task/revoke/{TASK_ID}").status_code == 200
        assert stock.broadcasts() == ["revoke"]
        assert stock.get("/metrics", auth=None).status_code == 200
    finally:
        stock.close()


# --- the browser test cannot skip quietly in CI ------------------------------------------


def _cannot_install() -> str:
    raise RuntimeError("no apt-get")


def test_browser_test_skips_without_chromium_outside_ci() -> None:
    with pytest.raises(pytest.skip.Exception, match="no apt-get"):
        chromium_or_skip(_cannot_install, environ={})


@pytest.mark.parametrize("value", ["true", "True", "1"])
def test_browser_test_fails_without_chromium_in_ci(value: str) -> None:
    with pytest.raises(pytest.fail.Exception, match="CI=true: a skip would hide"):
        chromium_or_skip(_cannot_install, environ={"CI": value})
