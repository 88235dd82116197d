"""The real Celery app plus probe tasks, for `celery -A tests.harness.probe_tasks worker`.

``orders.probe`` is routed and acknowledged like every ``orders.*`` task (queue ``orders``,
late ack, requeue when its worker dies): the delivery policy comes from the name alone.
"""

from __future__ import annotations

from functools import cache

import redis

from alpaca_broker.settings import load_settings
from celery_app import app

__all__ = ["app", "probe"]


@cache
def _redis() -> redis.Redis:
    return redis.Redis.from_url(load_settings().redis_url, decode_responses=True)


@app.task(name="orders.probe")
def probe(key: str, value: str, hold: bool = False) -> None:
    """Record a start, optionally block until released through Redis, then record the end."""
    client = _redis()
    client.rpush(f"{key}:started", value)
    if hold:
        client.blpop([f"{key}:release"], timeout=60)
    client.rpush(f"{key}:done", value)
