"""The real Celery app, whose first order task holds its acknowledgement until released.

For ``celery -A tests.tasks.hold_app worker -P prefork``: after the first
``orders.publish_event`` has published (the task returned, its late ack not yet sent) it
pushes its id to :data:`HOLDING` and blocks, so a test can SIGKILL the worker at the worst
moment.
"""

from __future__ import annotations

from typing import Any

import redis
from celery import signals

from alpaca_broker.keys import ORDER_EVENT_TASK
from alpaca_broker.settings import load_settings
from celery_app import app

__all__ = ["HOLDING", "app"]

HOLDING = "test:hold:holding"
_TAKEN = "test:hold:taken"
_RELEASE = "test:hold:release"


@signals.worker_process_init.connect
def _arm(**_: Any) -> None:
    # Armed in prefork pool children only: importing this module elsewhere (the test process,
    # an in-thread worker) holds nothing.
    signals.task_postrun.connect(_hold_first_order_task, weak=False)


def _hold_first_order_task(sender: Any = None, task_id: str | None = None, **_: Any) -> None:
    # task_postrun runs in the pool child before the result (and so the late ack) reaches
    # the parent process.
    if sender is None or sender.name != ORDER_EVENT_TASK:
        return
    client = redis.Redis.from_url(load_settings().redis_url)
    if client.set(_TAKEN, str(task_id), nx=True):
        client.rpush(HOLDING, str(task_id))
        client.blpop([_RELEASE], timeout=60)
    client.close()
