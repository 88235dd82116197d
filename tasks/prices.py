"""Celery task ``prices.publish_batch``: a batch of market-data messages into Redis."""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task

from alpaca_broker.keys import PRICES_BATCH_TASK
from alpaca_broker.logs import MalformedReporter
from tasks.price_events import DEFAULT_FAMILY
from tasks.price_frames import prepare_batch
from tasks.publisher import get_publisher
from tasks.retry import retryable_redis_errors

log = logging.getLogger(__name__)
_reporter = MalformedReporter(log)


@shared_task(name=PRICES_BATCH_TASK)
def publish_batch(items: list[Any], family: str = DEFAULT_FAMILY) -> int:
    """Normalize ``[received_at_ns, raw]`` items of ``family`` (``us_equity``, ``crypto``,
    ``us_option``) and publish the valid ones; returns how many.

    MalformedMessage items are skipped and reported (rate-limited); Redis faults raise so that the
    task's delivery policy retries the batch.
    """
    batch = prepare_batch(items, family)
    for exc in batch.malformed:
        _reporter.report(exc, "price message")
    if batch.malformed:
        log.debug("batch: %d published, %d malformed", len(batch.events), len(batch.malformed))
    with retryable_redis_errors():
        get_publisher().publish_prices(batch.events)
    return len(batch.events)
