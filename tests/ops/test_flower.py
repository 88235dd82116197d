"""Flower (``celery -A celery_app flower``, its compose command) over the running workers:
basic auth from ``FLOWER_BASIC_AUTH``, loopback by default, both queues and both workers, the
order worker's succeeded tasks, and no task events forced onto the price worker."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

from alpaca_broker.redis_server import free_port
from tests.harness.browser import chromium_or_skip, dump_dom
from tests.harness.compose import run_healthcheck
from tests.harness.service import ServiceProcess
from tests.harness.stack import OpsStack
from tests.harness.wait import wait_until

pytestmark = pytest.mark.slow

USER, PASSWORD = "ops", "s3cret-flower"
AUTH = (USER, PASSWORD)
ORDER_TASK, PRICE_TASK = "orders.publish_event", "prices.publish_batch"
# Flower, when enable_events is on, broadcasts enable_events to every worker this often.
EVENTS_ENABLE_INTERVAL = 5.0


@dataclass
class Flower:
    url: str
    port: int
    process: ServiceProcess
    started: float

    def get(self, path: str, auth: tuple[str, str] | None = AUTH) -> requests.Response:
        return requests.get(f"{self.url}{path}", auth=auth, timeout=10)

    def tasks(self) -> dict[str, dict[str, Any]]:
        response = self.get("/api/tasks")
        response.raise_for_status()
        tasks: dict[str, dict[str, Any]] = response.json()
        return tasks

    def succeeded(self, name: str) -> list[dict[str, Any]]:
        return [t for t in self.tasks().values() if t["name"] == name and t["state"] == "SUCCESS"]


@pytest.fixture(scope="module")
def flower(running_stack: OpsStack) -> Iterator[Flower]:
    running_stack.ensure_up()
    port = free_port()
    process = running_stack.start_flower(port, FLOWER_BASIC_AUTH=f"{USER}:{PASSWORD}")
    yield Flower(f"http://127.0.0.1:{port}", port, process, time.monotonic())
    process.stop()


@pytest.fixture(scope="module")
def chromium() -> str:
    return chromium_or_skip()


def wait_succeeded_orders(flower: Flower, count: int = 2) -> list[dict[str, Any]]:
    """Order tasks (from the simulator's order flow) that Flower saw succeed."""

    def enough() -> list[dict[str, Any]] | None:
        done = flower.succeeded(ORDER_TASK)
        return done if len(done) >= count else None

    return wait_until(enough, 30, interval=0.2, message=f"{count} succeeded order tasks in Flower")


def test_flower_api_shows_both_workers_and_queues_behind_basic_auth(
    flower: Flower, stack: OpsStack
) -> None:
    workers = flower.get("/api/workers?refresh=true")
    assert workers.status_code == 200
    names = {stack.worker_name("worker-prices"), stack.worker_name("worker-orders")}
    assert names <= set(workers.json())

    queues = flower.get("/api/queues/length")
    assert queues.status_code == 200
    assert {q["name"] for q in queues.json()["active_queues"]} >= {"prices", "orders"}

    for path in ("/api/workers", "/", "/tasks", "/api/tasks"):
        assert flower.get(path, auth=None).status_code == 401, path
        assert flower.get(path, auth=(USER, "wrong")).status_code == 401, path

    health = flower.get("/healthcheck", auth=None)
    assert (health.status_code, health.text) == (200, "OK")


def test_flower_listens_on_loopback_only_by_default(flower: Flower) -> None:
    listening = [
        c.laddr
        for c in psutil.Process(flower.process.pid).net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    ]
    assert listening
    assert {addr.ip for addr in listening} == {"127.0.0.1"}
    assert {addr.port for addr in listening} == {flower.port}


def test_flower_healthcheck_of_the_compose_file_passes(
    flower: Flower, stack: OpsStack, compose: dict[str, Any]
) -> None:
    done = run_healthcheck(compose, "flower", stack.env(FLOWER_PORT=str(flower.port)))
    assert done.returncode == 0, done.stderr


def test_flower_metrics_count_the_order_workers_succeeded_tasks(
    flower: Flower, stack: OpsStack
) -> None:
    wait_succeeded_orders(flower)
    orders = stack.worker_name("worker-orders")
    expected = (
        f'flower_events_total{{task="{ORDER_TASK}",type="task-succeeded",worker="{orders}"}}',
        f'flower_worker_online{{worker="{orders}"}} 1.0',
    )

    def counted() -> str | None:
        text = flower.get("/metrics").text
        return text if all(line in text for line in expected) else None

    wait_until(counted, 15, message=f"Flower's /metrics shows {expected}")
    assert flower.get("/metrics", auth=None).status_code == 401  # behind the login


@pytest.mark.timeout(900)  # may include installing Chromium with apt-get
def test_flower_in_headless_chromium_shows_both_workers_and_succeeded_tasks(
    flower: Flower, stack: OpsStack, chromium: str, tmp_path: Path
) -> None:
    wait_succeeded_orders(flower)
    base = f"http://{USER}:{PASSWORD}@127.0.0.1:{flower.port}"

    # The pages fill their counters and tables from the API by script: the DOM is read after
    # some virtual time has run them.
    workers_page = dump_dom(chromium, f"{base}/workers", tmp_path / "profile-workers")
    shown = set(re.findall(r'class="worker-name-link"[^>]*title="([^"]+)"', workers_page))
    assert shown == {stack.worker_name("worker-prices"), stack.worker_name("worker-orders")}
    assert _metric(workers_page, "workers-online") == 2
    assert _metric(workers_page, "workers-succeeded") >= 2

    tasks_page = dump_dom(chromium, f"{base}/tasks", tmp_path / "profile-tasks")
    rows = re.findall(r'<tr id="[0-9a-f-]{36}"[^>]*>(.*?)</tr>', tasks_page)
    succeeded = [row for row in rows if ORDER_TASK in row and ">SUCCESS<" in row]
    assert len(succeeded) >= 2, rows[:3]


def _metric(page: str, element_id: str) -> int:
    found = re.search(rf'id="{element_id}">(\d+)<', page)
    assert found, f"#{element_id} not filled in"
    return int(found.group(1))


def test_flower_does_not_turn_on_task_events_in_the_price_worker(
    flower: Flower, stack: OpsStack
) -> None:
    # Had Flower broadcast enable_events, it would have within its first interval.
    wait_until(
        lambda: time.monotonic() - flower.started > EVENTS_ENABLE_INTERVAL + 0.5,
        EVENTS_ENABLE_INTERVAL + 1,
        message="Flower's enable_events interval has passed",
    )
    received = stack.heartbeat()["streams"]["prices"]["received"]
    seen_orders = len(flower.succeeded(ORDER_TASK))
    # Price batches keep flowing through the price worker, order tasks through the order worker...
    wait_until(
        lambda: stack.heartbeat()["streams"]["prices"]["enqueued"] > received,
        10,
        message="more price batches sent",
    )
    wait_until(lambda: stack.client.llen("prices") == 0, 10, message="the price worker takes them")
    wait_until(
        lambda: len(flower.succeeded(ORDER_TASK)) > seen_orders,
        20,
        message="Flower still sees new order tasks",
    )
    # ...and Flower has events of the order tasks only.
    assert {t["name"] for t in flower.tasks().values()} == {ORDER_TASK}
    assert PRICE_TASK not in flower.get("/metrics").text
