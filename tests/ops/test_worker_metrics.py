"""The workers' Prometheus endpoint (WORKER_METRICS_PORT): a real prefork worker, real tasks."""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from alpaca_broker.keys import NEWS_ARTICLE_TASK, ORDER_EVENT_TASK, PRICES_BATCH_TASK
from alpaca_broker.settings import Settings
from celery_app import create_app
from tests.harness.wait import wait_until
from tests.harness.workers import WorkerProcess
from tests.tasks.payloads import RECEIVED_NS, bar, stream_messages, trade_update


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the endpoint by (name, sorted labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_worker_counts_published_malformed_duplicates_and_latency_per_type(
    redis_url: str, worker_factory: Callable[..., WorkerProcess]
) -> None:
    port = free_port()
    worker_factory(redis_url, concurrency=2, env={"WORKER_METRICS_PORT": str(port)})
    sender = create_app(Settings(REDIS_URL=redis_url, _env_file=None))
    good = bar("SPY", 1_700_000_000_000_000_000, 10.0)
    sender.send_task(PRICES_BATCH_TASK, args=[[[RECEIVED_NS, good], [RECEIVED_NS, {"T": "?"}]]])
    order = trade_update("AAPL", "fill")
    for _ in range(2):  # the second is a duplicate
        sender.send_task(ORDER_EVENT_TASK, args=[order, RECEIVED_NS, "stream"])
    sender.send_task(ORDER_EVENT_TASK, args=[{"event": "fill"}, RECEIVED_NS, "stream"])
    article = next(m for m in stream_messages("news") if m["T"] == "n")
    sender.send_task(NEWS_ARTICLE_TASK, args=[article, RECEIVED_NS, "stream"])

    def counted() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
        samples = scrape(port)
        want = {
            ("alpaca_broker_worker_events_published_total", (("type", "bar"),)): 1,
            ("alpaca_broker_worker_events_published_total", (("type", "order_update"),)): 1,
            ("alpaca_broker_worker_events_published_total", (("type", "news"),)): 1,
            ("alpaca_broker_worker_malformed_total", (("task", PRICES_BATCH_TASK),)): 1,
            ("alpaca_broker_worker_malformed_total", (("task", ORDER_EVENT_TASK),)): 1,
            ("alpaca_broker_worker_duplicates_skipped_total", (("task", ORDER_EVENT_TASK),)): 1,
        }
        return samples if all(samples.get(k) == v for k, v in want.items()) else None

    samples = wait_until(counted, 30, interval=0.2, message="every outcome counted")
    latency = ("alpaca_broker_worker_task_latency_seconds_count", (("task", PRICES_BATCH_TASK),))
    assert samples[latency] == 1
    assert samples[("alpaca_broker_worker_queue_depth", (("queue", "prices"),))] == 0
    assert samples[("alpaca_broker_redis_used_memory_bytes", ())] > 0


def test_worker_serves_no_metrics_unless_the_port_is_set(
    redis_url: str, worker_factory: Callable[..., WorkerProcess]
) -> None:
    worker = worker_factory(redis_url)
    assert "worker metrics on" not in worker.log()
