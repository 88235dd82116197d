"""Celery task ``orders.publish_event``: one trading-stream order event into Redis, once."""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task

from alpaca_broker.errors import MalformedMessage
from alpaca_broker.keys import ORDER_EVENT_TASK
from alpaca_broker.logs import MalformedReporter
from tasks.order_events import prepare_order
from tasks.publisher import get_publisher
from tasks.retry import retryable_redis_errors, wait_out_full_redis

log = logging.getLogger(__name__)
_reporter = MalformedReporter(log)


@shared_task(name=ORDER_EVENT_TASK)
def publish_event(data: dict[str, Any], received_at_ns: int, source: str) -> bool:
    """Normalize a ``trade_updates`` ``data`` object and publish it exactly once.

    Returns True when the event was new. A malformed event is logged and dropped (retrying
    cannot fix it); Redis faults raise so that the delivery policy retries until they pass.
    """
    try:
        event = prepare_order(data, received_at_ns, source)
    except MalformedMessage as exc:
        # Dropped once (never retried: the same input fails the same way), logged
        # rate-limited, and counted in this process and in Redis (P:meta:orders:malformed).
        _reporter.report(exc, f"order event (source={source!r})")
        get_publisher().count_malformed_order()
        return False
    with retryable_redis_errors():
        publisher = get_publisher()
        result = wait_out_full_redis(
            lambda: publisher.publish_order(event), f"order event {event.dedupe_id}"
        )
    if not result.new:
        log.info("order event %s already published, skipped", event.dedupe_id)
    return result.new
