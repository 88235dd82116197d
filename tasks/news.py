"""Celery task ``news.publish_article``: one news article into Redis, once per version."""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task

from alpaca_broker.errors import MalformedMessage
from alpaca_broker.keys import NEWS_ARTICLE_TASK
from alpaca_broker.logs import MalformedReporter
from tasks.news_events import prepare_news
from tasks.news_publisher import get_news_publisher
from tasks.publisher import get_publisher, reset_publisher
from tasks.retry import publish_patiently

log = logging.getLogger(__name__)
_reporter = MalformedReporter(log)


@shared_task(name=NEWS_ARTICLE_TASK)
def publish_article(data: dict[str, Any], received_at_ns: int, source: str) -> bool:
    """Normalize a news ``data`` message and publish it unless already published.

    Returns True when the article (or this later version of it) was new. A malformed article
    is counted and logged (rate-limited) and skipped (the contract's bad input); Redis faults
    are retried in place as for orders (tasks.retry), never acknowledged away.
    """
    try:
        event = prepare_news(data, received_at_ns, source)
    except MalformedMessage as exc:
        _reporter.report(exc, "news article")
        return False
    new = publish_patiently(
        lambda: get_news_publisher().publish_news(event),
        f"news article {event.id}",
        dead_letter=lambda reason: get_publisher().dead_letter(
            NEWS_ARTICLE_TASK, reason, [data, received_at_ns, source]
        ),
        fresh_client=reset_publisher,
    )
    if new is None:
        return False
    if not new:
        log.info("news article %s (version %d) already published", event.id, event.updated_at_ns)
    return new
