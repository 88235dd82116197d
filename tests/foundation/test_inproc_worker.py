"""The real tasks in an in-process worker thread (celery.contrib.testing.worker.start_worker)."""

from __future__ import annotations

import json
import time

from celery import Celery

from alpaca_broker.keys import PRICES_BATCH_TASK, Keys
from tests.harness.wait import wait_until


def test_price_batch_runs_in_an_in_process_worker_and_fills_the_latest_hash(
    inproc_worker: Celery, redis_client
) -> None:
    ts = time.time_ns()
    trade = {
        "T": "t",
        "S": "IBM",
        "i": 1,
        "x": "V",
        "p": 250.5,
        "s": 10,
        "c": ["@"],
        "z": "A",
        "t": ts,
    }
    inproc_worker.send_task(PRICES_BATCH_TASK, args=[[[ts + 1000, trade]]])
    key = Keys().latest("IBM")
    wait_until(lambda: redis_client.hget(key, "trade"), 10)
    event = json.loads(redis_client.hget(key, "trade"))
    assert (event["type"], event["ts_ns"], event["price"]) == ("trade", ts, 250.5)
