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
from tasks.retry import retryable_redis_errors

log = logging.getLogger(__name__)
_reporter = MalformedReporter(log)


@shared_task(name=NEWS_ARTICLE_TASK)
def publish_article(data: dict[str, Any], received_at_ns: int, source: str) -> bool:
    """Normalize a news ``data`` message and publish it unless already published.

    Returns True when the article (or this later version of it) was new. A malformed article
    is counted and logged (rate-limited) and dropped; Redis faults raise for the retry policy.
    """
    try:
        event = prepare_news(data, received_at_ns, source)
    except MalformedMessage as exc:
        _reporter.report(exc, "news article")
        return False
    with retryable_redis_errors():
        new = get_news_publisher().publish_news(event)
    if not new:
        log.info("news article %s (version %d) already published", event.id, event.updated_at_ns)
    return new
