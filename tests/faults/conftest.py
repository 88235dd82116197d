"""Fault-suite fixtures: the end-to-end producer factory and pipelines, and a simulator whose
synthetic orders run their lifecycles briskly (more events per second of test)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from alpaca_broker.keys import ORDERS_QUEUE
from simulator.api import Simulator

# The end-to-end suite's fixtures.
from tests.e2e.conftest import own_pipeline, pipeline, pipeline_on, producer_factory
from tests.harness.pipeline import Pipeline
from tests.harness.workers import WorkerProcess

__all__ = ["own_pipeline", "pipeline", "pipeline_on", "producer_factory"]


@pytest.fixture
def sim() -> Iterator[Simulator]:
    """A scripted simulator (market and order flow off until a test switches them on)."""
    with Simulator(order_steps=(0.05, 0.3), seed=7) as simulator:
        yield simulator


@pytest.fixture
def orders_worker(pipeline: Pipeline) -> WorkerProcess:
    """A worker of the orders queue on the test's database."""
    return pipeline.worker(queues=ORDERS_QUEUE)
