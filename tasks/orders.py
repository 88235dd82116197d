"""Celery task ``orders.publish_event``: one trading-stream order event into Redis, once."""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task

from alpaca_broker.errors import MalformedMessage
from alpaca_broker.keys import ORDER_EVENT_TASK
from alpaca_broker.logs import MalformedReporter
from tasks.order_events import prepare_order
from tasks.publisher import get_publisher, reset_publisher
from tasks.retry import publish_patiently, write_dead_letter

log = logging.getLogger(__name__)
_reporter = MalformedReporter(log)


@shared_task(name=ORDER_EVENT_TASK)
def publish_event(data: dict[str, Any], received_at_ns: int, source: str) -> bool:
    """Normalize a ``trade_updates`` ``data`` object and publish it exactly once.

    Returns True when the event was new. Never acknowledges an event it did not publish:
    Redis faults are retried in place until they pass (tasks.retry), and an event that can
    never be published (malformed: the same input fails the same way every time) goes to the
    dead-letter stream with its reason.
    """

    def dead_letter(reason: str) -> None:
        get_publisher().dead_letter(ORDER_EVENT_TASK, reason, [data, received_at_ns, source])

    try:
        event = prepare_order(data, received_at_ns, source)
    except MalformedMessage as exc:
        # Logged rate-limited, counted in Redis (P:meta:orders:malformed) and kept.
        _reporter.report(exc, f"order event (source={source!r})")
        write_dead_letter(dead_letter, f"malformed: {exc}", "malformed order event")
        get_publisher().count_malformed_order()
        return False
    result = publish_patiently(
        lambda: get_publisher().publish_order(event),
        f"order event {event.dedupe_id}",
        dead_letter=dead_letter,
        fresh_client=reset_publisher,
    )
    if result is None:
        return False
    if not result.new:
        log.info("order event %s already published, skipped", event.dedupe_id)
    return result.new
