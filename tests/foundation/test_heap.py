"""The startup heap is frozen out of the garbage collector's full collections."""

from __future__ import annotations

import gc

from alpaca_broker.heap import freeze_startup_heap
from celery_app import config


def test_freezing_moves_the_live_heap_out_of_the_collectors_sight() -> None:
    try:
        freeze_startup_heap()
        assert gc.get_freeze_count() > 1000
        assert gc.isenabled()
    finally:
        gc.unfreeze()


def test_a_celery_worker_freezes_its_heap_when_ready_and_in_each_pool_child() -> None:
    from celery import signals

    receivers = [
        ref() for signal in (signals.worker_ready, signals.worker_process_init)
        for _, ref in signal.receivers
    ]  # fmt: skip
    assert receivers.count(config._freeze_heap) == 2
