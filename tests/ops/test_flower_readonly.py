"""Flower as shipped (its compose command and flowerconfig.py) is read-only: its HTTP API
cannot run, revoke, abort or limit a task, nor shut down or resize a worker, so a Flower login
cannot forge an order event; ``/metrics`` needs the login.

Each Flower here runs on a Redis of its own with no worker, so a task it sent would stay in
its queue, and a broadcast (revoke, shutdown) would reach a subscriber to every channel.
The same requests to a stock Flower (an empty ``--conf``) send them: the check can see it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from alpaca_broker.redis_server import RedisServer, free_port
from tests.harness.browser import chromium_or_skip
from tests.harness.compose import command, environment, local_argv, service_env
from tests.harness.service import ServiceProcess
from tests.harness.wait import wait_until

pytestmark = pytest.mark.slow

AUTH = ("ops", "s3cret-flower")
FORGED = {  # a trade_updates data object, as the order producer hands it over
    "event": "fill",
    "qty": "1000",
    "order": {"id": "forged-order", "symbol": "AAPL", "filled_qty": "1000", "status": "filled"},
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


# Celery's remote-control commands that act (Flower also broadcasts reads on its own).
ACTING = {"revoke", "revoke_by_stamped_headers", "terminate", "shutdown", "pool_restart",
          "pool_grow", "pool_shrink", "autoscale", "add_consumer", "cancel_consumer",
          "time_limit", "rate_limit"}  # fmt: skip


def _method(data: str) -> str:
    """The remote-control method of a broadcast message on kombu's pidbox channel."""
    try:
        envelope = json.loads(data)
        body = json.loads(base64.b64decode(envelope["body"]))
        return str(body.get("method"))
    except (ValueError, KeyError, TypeError):
        return f"unparsed: {data[:80]}"


class Bare:
    """A Flower on its own Redis, and a subscriber to every channel of that Redis."""

    def __init__(self, compose: dict[str, Any], directory: Path, *extra: str) -> None:
        self.server = RedisServer(directory / "redis")
        self.server.start()
        self.client = redis.Redis.from_url(self.server.url, decode_responses=True)
        self.pubsub = self.client.pubsub()
        self.pubsub.psubscribe("*")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        settings = environment(compose, "flower", {"FLOWER_BASIC_AUTH": ":".join(AUTH)})
        settings = {
            k: v for k, v in settings.items() if k not in ("REDIS_URL", "CELERY_BROKER_URL")
        }
        env = service_env(self.server.url, **settings, FLOWER_PORT=str(self.port))
        argv = [*local_argv(command(compose, "flower")), *extra]
        self.flower = ServiceProcess("flower", argv, env, directory / "flower.log")
        self.flower.start(lambda: self._ok("/healthcheck"))

    def _ok(self, path: str) -> bool:
        try:
            return requests.get(f"{self.url}{path}", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def post(self, path: str) -> requests.Response:
        forging = "apply/" in path or "/send-task/" in path
        body = json.dumps({"args": [FORGED, 1, "stream"]} if forging else {})
        return requests.post(f"{self.url}{path}", data=body, auth=AUTH, timeout=10)

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
        self.flower.stop()
        self.pubsub.close()
        self.server.stop()


@pytest.fixture
def shipped(compose: dict[str, Any], tmp_path: Path) -> Iterator[Bare]:
    bare = Bare(compose, tmp_path)
    yield bare
    bare.close()


def test_flower_as_shipped_cannot_apply_send_revoke_or_control_anything(shipped: Bare) -> None:
    shipped.broadcasts()
    answers = {path: shipped.post(path).status_code for path in ACTIONS}

    assert answers == {path: 404 for path in ACTIONS}
    assert shipped.queued() == {}  # no task sent, the forged fill above included
    assert shipped.broadcasts() == []  # no revoke, shutdown or pool command broadcast
    # Reading still works, behind the login.
    tasks = requests.get(f"{shipped.url}/api/tasks", auth=AUTH, timeout=10)
    assert tasks.status_code == 200
    assert requests.get(f"{shipped.url}/api/tasks", timeout=10).status_code == 401


def test_flower_metrics_need_the_login(shipped: Bare) -> None:
    assert requests.get(f"{shipped.url}/metrics", timeout=10).status_code == 401
    wrong = requests.get(f"{shipped.url}/metrics", auth=(AUTH[0], "wrong"), timeout=10)
    assert wrong.status_code == 401
    metrics = requests.get(f"{shipped.url}/metrics", auth=AUTH, timeout=10)
    assert metrics.status_code == 200
    assert "flower_" in metrics.text
    assert requests.get(f"{shipped.url}/healthcheck", timeout=10).text == "OK"  # stays open


def test_a_stock_flower_would_send_the_forged_fill_and_the_revoke(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    """The control: without flowerconfig.py the same requests do act, and the checks above
    would see it."""
    empty = tmp_path / "empty_flowerconfig.py"
    empty.write_text("")
    stock = Bare(compose, tmp_path, f"--conf={empty}", "--address=127.0.0.1")
    try:
        stock.broadcasts()
        forged = stock.post("/api/task/async-apply/orders.publish_event")
        assert forged.status_code == 200, forged.text
        assert stock.queued() == {"orders": 1}
        body = json.loads(stock.client.lindex("orders", 0) or "{}")
        assert body["headers"]["task"] == "orders.publish_event"
        assert stock.post(f"/api/task/revoke/{TASK_ID}").status_code == 200
        assert stock.broadcasts() == ["revoke"]
        assert requests.get(f"{stock.url}/metrics", timeout=10).status_code == 200
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
