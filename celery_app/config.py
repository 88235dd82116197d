"""The Celery application: JSON-only wire, two queues, and a delivery policy per queue."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from celery import Celery, signals
from kombu import Exchange, Queue, serialization

from alpaca_broker.errors import RETRYABLE, ConfigError
from alpaca_broker.heap import freeze_startup_heap
from alpaca_broker.keys import NEWS_TASK_PREFIX, ORDERS_QUEUE, PRICES_QUEUE
from alpaca_broker.logs import setup_logging
from alpaca_broker.redis_client import broker_options, broker_tls
from alpaca_broker.settings import Settings, exit_on_config_error, load_settings
from celery_app import broker
from celery_app.wire import dumps_json, loads_json

TASK_MODULES: tuple[str, ...] = ("tasks.prices", "tasks.orders", "tasks.news", "tasks.metrics")

# Orders must never be lost: ack after the task returns, requeue when the pool child dies.
# No Celery retry: a retry is a new task message sent to the broker, and when that send fails
# (the broker is the output Redis, refusing writes for the same reason the task failed, or
# kombu's channel closed under it) Celery rejects the task with requeue=False, which deletes
# it. The task body retries in place instead, unacknowledged meanwhile (tasks.retry), and
# never raises. Prices are many and superseded within milliseconds: ack on receipt, retry
# briefly, never replay a stale batch for long.
ORDER_POLICY: dict[str, Any] = {
    "acks_late": True,
    "reject_on_worker_lost": True,
}
PRICE_POLICY: dict[str, Any] = {
    "acks_late": False,
    "autoretry_for": RETRYABLE,
    "retry_backoff": 0.2,
    "retry_backoff_max": 2,
    "retry_jitter": True,
    "max_retries": 5,
}


PRICE_TASK_EXPIRES: Final = 30.0
"""Seconds after sending that a price batch is stale: a worker discards it unrun (Celery's
``expires``). Set on every price task, whoever sends it (:func:`_expire_price_tasks`)."""


class DeliveryPolicy:
    """Celery task annotation: a task's name prefix (``orders.``/``prices.``) sets its policy."""

    def annotate(self, task: Any) -> dict[str, Any] | None:
        name: str = task.name or ""
        if name.startswith((f"{ORDERS_QUEUE}.", f"{NEWS_TASK_PREFIX}.")):
            return dict(ORDER_POLICY)
        if name.startswith(f"{PRICES_QUEUE}."):
            return dict(PRICE_POLICY)
        return None

    def annotate_any(self) -> None:
        return None


def _queue(name: str, *, no_ack: bool = False) -> Queue:
    # Each queue gets its own exchange and key: left to defaults, Celery binds every queue to
    # exchange `celery` with key `celery`, and the Redis transport then copies each task
    # into every queue.
    return Queue(name, Exchange(name, type="direct"), routing_key=name, no_ack=no_ack)


def celery_config(
    settings: Settings, queue: str | None = None, *, watch_only: bool = False
) -> dict[str, Any]:
    """Every Celery setting, derived from our settings object; ``queue=PRICES_QUEUE``: for a
    process that sends or consumes prices only (their broker, when it is one of their own);
    ``watch_only``: for a process that only asks workers (``health``), which then never puts
    unacknowledged tasks back (:data:`celery_app.broker.WATCH_ONLY`)."""
    vt = settings.visibility_timeout
    restore_every = max(1, min(10, vt // 4))
    sentinel = broker_options(settings)
    transport: dict[str, Any] = sentinel[1] if sentinel else {}
    url = sentinel[0] if sentinel else settings.broker_url
    tls = broker_tls(settings, settings.broker_url)
    if queue == PRICES_QUEUE and settings.prices_broker_apart:
        url, transport = str(settings.celery_prices_broker_url), {}
        tls = broker_tls(settings, url)
    return {
        "broker_url": url,
        # rediss:// (plain or through Sentinel): the certificate and host name verified.
        "broker_use_ssl": tls,
        # Celery prefers the CELERY_BROKER_URL environment variable to broker_url, but the
        # read and write URLs to it: so the broker chosen here (through Sentinel when it is
        # the output Redis, or the prices' own) is the one every connection uses.
        "broker_read_url": url,
        "broker_write_url": url,
        "broker_connection_retry": True,
        # A ReadOnlyError (a demoted primary) is a channel error to kombu: without this the
        # consumer stops instead of reconnecting to the new primary (docs/reliability.md).
        "broker_channel_error_retry": True,
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,  # reconnect forever; the default gives up after 100
        "broker_transport_options": {
            # Unacked order tasks of a dead worker come back after this many seconds (plus
            # at most one restore interval): 25 s with the defaults (docs/reliability.md).
            "visibility_timeout": vt,
            "unacked_restore_interval": restore_every,
            "unacked_restore_throttle": 1,
            # A sweep holds a mutex key (SET NX EX), 300 s by default: a worker killed during
            # a sweep, or a primary dying during one (the key replicated, its DEL never sent),
            # would stop every restore for five minutes. A sweep takes milliseconds, and
            # restore_by_tag is a WATCH transaction, so two overlapping sweeps restore a
            # task once.
            "unacked_mutex_expire": restore_every,
            "socket_timeout": 10,
            "socket_connect_timeout": 5,
            "health_check_interval": 25,
            broker.WATCH_ONLY: watch_only,
            **transport,
        },
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_ignore_result": True,
        "result_backend": None,
        # Both queues are acknowledged, so the prefetch limit holds on every pool (with
        # no_ack, kombu enforced none: a stalled prefork worker pulled the whole price
        # backlog into memory). Price acks stay as cheap as no_ack: their ack state lives
        # in the worker only, no Redis command per batch (celery_app.broker.BoundedQoS).
        "task_queues": [_queue(PRICES_QUEUE), _queue(ORDERS_QUEUE)],
        "task_routes": {
            f"{PRICES_QUEUE}.*": {"queue": PRICES_QUEUE},
            f"{ORDERS_QUEUE}.*": {"queue": ORDERS_QUEUE},
            f"{NEWS_TASK_PREFIX}.*": {"queue": ORDERS_QUEUE},  # kept and retried like orders
        },
        "task_annotations": [DeliveryPolicy()],
        "worker_prefetch_multiplier": 1,
        "worker_hijack_root_logger": False,
        # On Redis, True turns a possible duplicate into a certain delay of visibility_timeout.
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "worker_send_task_events": False,
        "task_send_sent_event": False,
    }


def register_compact_json() -> None:
    """Make kombu's ``json`` serializer write compact JSON (no spaces after , and :), fast
    (:func:`dumps_json`), and read it without a Python call per object (:func:`loads_json`).

    Still plain ``application/json``, read by any JSON decoder; a price batch is about a
    sixth smaller, which every copy of it (Redis, AOF, the worker) pays for.
    """
    serialization.register(
        "json",
        dumps_json,
        loads_json,
        content_type="application/json",
        content_encoding="utf-8",
    )


def create_app(
    settings: Settings | None = None, queue: str | None = None, *, watch_only: bool = False
) -> Celery:
    """Build the Celery app from ``settings`` (default: the environment); ``queue`` and
    ``watch_only``: see :func:`celery_config`."""
    settings = settings or load_settings()
    register_compact_json()
    broker.install()
    app = Celery("alpaca_broker", include=list(TASK_MODULES))
    app.conf.update(celery_config(settings, queue, watch_only=watch_only))
    return app


def worker_broker(settings: Settings, queues: Any) -> dict[str, Any]:
    """The broker settings a worker consuming ``queues`` (its ``-Q``) must change: none,
    unless ``prices`` has a broker of its own; then a prices-only worker consumes it there,
    and a worker that would mix prices with other queues is a ConfigError (one Celery
    worker has one broker)."""
    if not settings.prices_broker_apart:
        return {}
    chosen = set(queues.split(",") if isinstance(queues, str) else queues or ())
    if chosen == {PRICES_QUEUE}:
        prices = celery_config(settings, PRICES_QUEUE)
        keys = (
            "broker_url",
            "broker_read_url",
            "broker_write_url",
            "broker_use_ssl",
            "broker_transport_options",
        )
        return {k: prices[k] for k in keys}
    if chosen and PRICES_QUEUE not in chosen:
        return {}
    raise ConfigError(
        "CELERY_PRICES_BROKER_URL",
        f"gives the {PRICES_QUEUE!r} queue a broker of its own: consume it in a worker of its "
        f"own (-Q {PRICES_QUEUE}), and the other queues in another (-Q {ORDERS_QUEUE})",
    )


@signals.celeryd_init.connect
def _worker_broker(conf: Any = None, options: Any = None, **_: Any) -> None:
    # Before the worker's first connection: a -Q prices worker reads the prices broker.
    try:
        conf.update(worker_broker(load_settings(), (options or {}).get("queues")))
    except ConfigError as exc:
        exit_on_config_error(exc)


@signals.before_task_publish.connect
def _expire_price_tasks(sender: str | None = None, headers: Any = None, **_: Any) -> None:
    # Runs in the sending process (producer, or a worker re-sending a retry). The header is
    # what apply_async(expires=...) writes: an ISO 8601 time, checked by the worker.
    if (
        isinstance(headers, dict)
        and (sender or "").startswith(f"{PRICES_QUEUE}.")
        and not headers.get("expires")
    ):
        expires = datetime.now(UTC) + timedelta(seconds=PRICE_TASK_EXPIRES)
        headers["expires"] = expires.isoformat()


@signals.worker_ready.connect  # a solo worker, or a prefork pool's parent
@signals.worker_process_init.connect  # each prefork child
def _freeze_heap(**_: Any) -> None:
    freeze_startup_heap()


@signals.setup_logging.connect
def _worker_logging(loglevel: Any = None, **_: Any) -> None:
    # Connecting this signal stops Celery from configuring logging its own way.
    # The level is the worker's -l flag (Celery's convention), else LOG_LEVEL.
    settings = load_settings()
    level = logging.getLevelName(loglevel) if isinstance(loglevel, int) else settings.log_level
    setup_logging("worker", fmt=settings.log_format, level=level, secrets=settings.secret_values())
