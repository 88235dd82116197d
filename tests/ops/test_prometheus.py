"""The compose ``monitoring`` profile: a real Prometheus (Debian's ``prometheus``, installed
here when missing) scraping a running producer and worker fed by the simulator, and the
Grafana provisioning and dashboard it serves, every query checked against Prometheus."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from alpaca_broker.keys import ORDER_EVENT_TASK
from alpaca_broker.redis_server import RedisServer, free_port
from alpaca_broker.settings import Settings
from celery_app import create_app
from simulator.api import Simulator
from tests.harness.compose import environment
from tests.harness.monitoring import (
    DASHBOARD,
    PROVISIONING,
    Prometheus,
    configured_targets,
    dashboard,
    dashboard_queries,
    metric_names,
    prometheus_binary,
    scrape_config,
)
from tests.harness.producer import ProducerProcess
from tests.harness.wait import wait_until
from tests.harness.workers import WorkerProcess
from tests.tasks.payloads import trade_update

PRODUCERS = ("producer", "producer-standby", "producer-demo")
WORKERS = ("worker-prices", "worker-orders")
JOBS = {"producer": "alpaca-broker-producer", "worker": "alpaca-broker-worker"}
# What the dashboard must show (issue 17): a panel title for each.
PANELS = ("received/s", "published/s", "latency", "queue depth", "dropped", "reconnects",
          "lease holder", "redis used memory", "malformed", "duplicates")  # fmt: skip


@pytest.fixture(scope="module")
def prometheus_path() -> str:
    binary, reason = prometheus_binary()
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the Prometheus test: {reason}")
        pytest.skip(reason)
    return binary


@pytest.fixture
def prometheus(
    prometheus_path: str, compose: dict[str, Any], tmp_path: Path
) -> Iterator[Callable[[dict[str, str]], Prometheus]]:
    started: list[Prometheus] = []

    def start(targets: dict[str, str]) -> Prometheus:
        flags = [str(f) for f in compose["services"]["prometheus"]["command"]]
        server = Prometheus(prometheus_path, flags, tmp_path / "prometheus", free_port())
        server.directory.mkdir()
        started.append(server)
        return server.start(scrape_config(targets))

    yield start
    for server in started:
        server.stop()


def test_prometheus_config_scrapes_the_compose_producers_and_workers(
    compose: dict[str, Any],
) -> None:
    def endpoint(service: str, port_setting: str) -> str:
        env = environment(compose, service)
        assert env["METRICS_HOST"] == "0.0.0.0", f"{service}: reachable from Prometheus"
        return f"{service}:{env[port_setting]}"

    assert configured_targets() == {
        JOBS["producer"]: [endpoint(s, "METRICS_PORT") for s in PRODUCERS],
        JOBS["worker"]: [endpoint(s, "WORKER_METRICS_PORT") for s in WORKERS],
    }
    volumes = compose["services"]["prometheus"]["volumes"]
    assert "./monitoring/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in volumes
    assert (
        "--config.file=/etc/prometheus/prometheus.yml"
        in compose["services"]["prometheus"]["command"]
    )


@pytest.mark.slow
@pytest.mark.timeout(900)  # the first run may install Debian's prometheus
def test_prometheus_scrapes_producer_and_worker_and_every_dashboard_query_finds_its_series(
    prometheus: Callable[[dict[str, str]], Prometheus],
    compose: dict[str, Any],
    own_redis: RedisServer,
    worker_factory: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    url = own_redis.url
    producer_port, worker_port = free_port(), free_port()
    # The live producer's name and lease (so that the role gauge exists) from the compose
    # file; its container-only metrics address made local.
    live = environment(compose, "producer")
    settings = {k: live[k] for k in ("PRODUCER_NAME", "PRODUCER_LEASE")}
    settings.update(METRICS_HOST="127.0.0.1", METRICS_PORT=str(producer_port))
    with Simulator(synthetic=True, rate=50, order_rate=0.5, seed=17) as sim:
        worker_factory(
            url,
            concurrency=2,
            env={"METRICS_HOST": "127.0.0.1", "WORKER_METRICS_PORT": str(worker_port)},
        )
        urls = dict(line.split("=", 1) for line in sim.env_lines())
        producer = ProducerProcess(
            url, urls, tmp_path / "producer.log", BAR_BACKFILL_MINUTES="0", **settings
        ).start()
        try:
            producer.wait_connected("prices", "orders", timeout=30)
            _send_duplicate_and_malformed_orders(url)
            server = prometheus(
                {
                    JOBS["producer"]: f"127.0.0.1:{producer_port}",
                    JOBS["worker"]: f"127.0.0.1:{worker_port}",
                }
            )
            _check_prometheus(server, settings["PRODUCER_NAME"])
        finally:
            producer.stop()


def _send_duplicate_and_malformed_orders(redis_url: str) -> None:
    """The simulator sends neither: an order event twice, and one that is malformed."""
    sender = create_app(Settings(REDIS_URL=redis_url, _env_file=None))
    order = trade_update("AAPL", "fill")
    for _ in range(2):
        sender.send_task(ORDER_EVENT_TASK, args=[order, time.time_ns(), "stream"])
    sender.send_task(ORDER_EVENT_TASK, args=[{"event": "fill"}, time.time_ns(), "stream"])


def _check_prometheus(server: Prometheus, producer_name: str) -> None:
    def both_up() -> bool:
        up = {r["metric"]["job"]: r["value"][1] for r in server.query("up")}
        return up == {JOBS["producer"]: "1", JOBS["worker"]: "1"}

    wait_until(both_up, 30, interval=0.5, message=f"both targets up\n{server.log()}")
    queries = dashboard_queries()
    names = {name for exprs in queries.values() for e in exprs for name in metric_names(e)}
    assert all(n.startswith("alpaca_broker_") for n in names), names

    def missing() -> set[str]:
        gone = {name for name in names if not server.series(name)}
        return gone

    # Every metric the dashboard names is a series Prometheus holds (read back over its API).
    still = _wait_false(missing, 60)
    assert not still, f"series the dashboard names but Prometheus lacks: {sorted(still)}"

    # Every query runs, and each has data once two scrapes are in a rate's window.
    exprs = [e for group in queries.values() for e in group]
    empty = _wait_false(lambda: [e for e in exprs if not server.query(e)], 60)
    assert not empty, f"dashboard queries with no data: {empty}"
    results = {e: server.query(e) for e in exprs}
    holder = next(e for e in results if 'role{role="active"}' in e)
    assert [(r["metric"]["producer"], r["value"][1]) for r in results[holder]] == [
        (producer_name, "1")
    ]
    p99 = next(e for e in results if e.startswith("histogram_quantile(0.99"))
    assert all(math.isfinite(float(r["value"][1])) for r in results[p99] if r["value"][1] != "NaN")
    # A rate over the scrapes in its window: 0 until two scrapes straddle a published batch.
    published = next(e for e in results if "events_published_total" in e)
    wait_until(
        lambda: sum(float(r["value"][1]) for r in server.query(published)) > 0,
        60,
        interval=0.5,
        message=f"{published} above 0",
    )


def _wait_false(check: Callable[[], Any], timeout: float) -> Any:
    """Poll ``check`` until it returns a falsy value or ``timeout`` passes; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if not value or time.monotonic() >= deadline:
            return value
        time.sleep(0.5)


def test_grafana_provisions_the_prometheus_datasource_and_the_dashboard(
    compose: dict[str, Any],
) -> None:
    grafana = compose["services"]["grafana"]
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in grafana["volumes"] if ":ro" in v)
    assert mounts == {
        "./monitoring/grafana/provisioning": "/etc/grafana/provisioning",
        "./monitoring/grafana/dashboards": "/etc/grafana/dashboards",
    }
    assert grafana["ports"] == ["127.0.0.1:3000:3000"]
    sources = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    (source,) = sources["datasources"]
    prometheus_port = compose["services"]["prometheus"]["ports"][0].rsplit(":", 1)[1]
    assert (source["type"], source["url"]) == ("prometheus", f"http://prometheus:{prometheus_port}")
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "alpaca-broker.yml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/etc/grafana/dashboards"
    assert grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"] == (
        f"/etc/grafana/dashboards/{DASHBOARD.name}"
    )

    board = dashboard()
    assert board["uid"]
    assert board["title"]
    assert board["schemaVersion"] >= 36
    panels = board["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    titles = " | ".join(p["title"].lower() for p in panels)
    assert all(want in titles for want in PANELS), titles
    for panel in panels:
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == source["uid"], panel["title"]
            assert metric_names(target["expr"]), target["expr"]
    latency = next(p for p in panels if "latency" in p["title"].lower())
    exprs = [t["expr"] for t in latency["targets"]]
    assert all("histogram_quantile" in e and "_bucket" in e for e in exprs)


def test_metric_names_reads_the_series_out_of_a_query() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, task) (rate(a_bucket{task="x"}[5m]))) '
        "/ on (task) group_left max without (queue) (b_total offset 5m) and c"
    )
    assert metric_names(expr) == {"a_bucket", "b_total", "c"}
