"""The workers' Prometheus metrics, served by each worker's main process when
``WORKER_METRICS_PORT`` is set (off otherwise: nothing here runs).

Pool processes record into ``prometheus_client``'s multiprocess files (a directory made at
``worker_init`` and inherited by every forked child); the main process serves them all, plus
gauges read from Redis at scrape time (queue depths, Redis memory). Counted from each task's
outcome (``task_success``): events published per type, malformed items, duplicates skipped,
and the latency from ``received_at`` (the producer read it) to published.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from typing import Any, Final

from celery import signals

from alpaca_broker.errors import MalformedMessage
from alpaca_broker.keys import NEWS_ARTICLE_TASK, ORDER_EVENT_TASK, PRICES_BATCH_TASK, QUEUES
from alpaca_broker.settings import Settings, load_settings

log = logging.getLogger(__name__)

DIR_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
ENABLED_ENV: Final = "ALPACA_BROKER_WORKER_METRICS"
PREFIX: Final = "alpaca_broker_worker"
LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

_metrics: dict[str, Any] = {}
_served: dict[str, Any] = {}


def _enabled() -> bool:
    return bool(_served) or (
        bool(os.environ.get(DIR_ENV)) and "ALPACA_WORKER_METRICS" in os.environ
    )


def _get() -> dict[str, Any]:
    """The metric objects of this process, made on first use (after the directory is set)."""
    if not _metrics:
        from prometheus_client import Counter, Histogram, values

        values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call] # multiprocess: the env is set by now
        _metrics["published"] = Counter(
            f"{PREFIX}_events_published", "Events published, by event type.", ["type"]
        )
        _metrics["malformed"] = Counter(
            f"{PREFIX}_malformed", "Items dropped as malformed, by task.", ["task"]
        )
        _metrics["duplicates"] = Counter(
            f"{PREFIX}_duplicates_skipped", "Events already published, skipped.", ["task"]
        )
        _metrics["latency"] = Histogram(
            f"{PREFIX}_task_latency_seconds",
            "From received_at (read off the socket) to published, per event.",
            ["task"],
            buckets=LATENCY_BUCKETS,
        )
    return _metrics


def _price_types(items: list[Any], family: str) -> Iterator[tuple[str | None, int | None]]:
    """(event type or None when malformed, received_at_ns) of each item of a price batch."""
    from tasks.price_events import normalize_price

    for item in items:
        try:
            event = normalize_price(item[1], item[0], family, *item[2:3])
            yield event["type"], item[0]
        except (MalformedMessage, TypeError, IndexError, KeyError):
            yield None, None


def record(task: str, args: tuple[Any, ...], kwargs: dict[str, Any], result: Any) -> None:
    """Count the outcome of one successful task run (pure bookkeeping, no Redis)."""
    metrics, now = _get(), time.time_ns()
    if task == PRICES_BATCH_TASK:
        items = args[0] if args else kwargs.get("items", [])
        family = args[1] if len(args) > 1 else kwargs.get("family", "us_equity")
        if not isinstance(items, list):
            metrics["malformed"].labels(task).inc()
            return
        for kind, received in _price_types(items, family):
            if kind is None:
                metrics["malformed"].labels(task).inc()
                continue
            metrics["published"].labels(kind).inc()
            metrics["latency"].labels(task).observe(max(0, now - int(received or now)) / 1e9)
        return
    if task not in (ORDER_EVENT_TASK, NEWS_ARTICLE_TASK) or len(args) < 3:
        return
    kind = "order_update" if task == ORDER_EVENT_TASK else "news"
    if result:
        metrics["published"].labels(kind).inc()
        received = args[1] if type(args[1]) is int else now
        metrics["latency"].labels(task).observe(max(0, now - received) / 1e9)
    elif _malformed(task, args):
        metrics["malformed"].labels(task).inc()
    else:
        metrics["duplicates"].labels(task).inc()


def _malformed(task: str, args: tuple[Any, ...]) -> bool:
    from tasks.news_events import prepare_news
    from tasks.order_events import prepare_order

    prepare = prepare_order if task == ORDER_EVENT_TASK else prepare_news
    try:
        prepare(*args[:3])
    except MalformedMessage:
        return True
    return False


class RedisCollector:
    """Gauges read from Redis at scrape time: queue depths and Redis memory."""

    def __init__(self, settings: Settings) -> None:
        from alpaca_broker.redis_client import connect  # TLS and Sentinel as every client

        self.client = connect(settings, socket_timeout=2, socket_connect_timeout=2)

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        depth = GaugeMetricFamily(
            f"{PREFIX}_queue_depth", "Tasks waiting, by queue.", labels=["queue"]
        )
        memory = GaugeMetricFamily("alpaca_broker_redis_used_memory_bytes", "Redis used_memory.")
        try:
            for queue in QUEUES:
                depth.add_metric([queue], self.client.llen(queue))
            memory.add_metric([], self.client.info("memory")["used_memory"])
        except Exception as exc:  # a scrape must not fail because Redis is away
            log.warning("worker metrics: Redis unreadable: %s", exc)
            return
        yield depth
        yield memory


@signals.worker_init.connect
def _start(**_: Any) -> None:
    settings = load_settings()
    if settings.worker_metrics_port is None:
        return
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    directory = tempfile.mkdtemp(prefix="alpaca-broker-worker-metrics-")
    os.environ[DIR_ENV] = directory
    os.environ[ENABLED_ENV] = "1"
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    registry.register(RedisCollector(settings))
    server, thread = start_http_server(
        settings.worker_metrics_port, addr=settings.metrics_host, registry=registry
    )
    _served.update(server=server, thread=thread, directory=directory)
    log.info("worker metrics on http://%s:%s/metrics", settings.metrics_host, server.server_port)


@signals.task_success.connect
def _on_success(sender: Any = None, result: Any = None, **_: Any) -> None:
    if not _enabled() or sender is None:
        return
    try:
        request = sender.request
        record(sender.name, tuple(request.args or ()), dict(request.kwargs or {}), result)
    except Exception:  # metrics never fail a task
        log.exception("worker metrics: recording failed")


@signals.worker_shutdown.connect
def _stop(**_: Any) -> None:
    server = _served.pop("server", None)
    if server is not None:
        server.shutdown()
        shutil.rmtree(_served.pop("directory"), ignore_errors=True)
