"""A test's pipeline launcher: subprocess workers and producers bound to one Redis URL and one
simulator, so that a test names what it starts and not where each piece connects."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from simulator.api import Simulator
from tests.harness.producer import ProducerProcess
from tests.harness.workers import WorkerProcess


@dataclass(frozen=True)
class Pipeline:
    """``worker(**options)`` and ``producer(**env)`` on :attr:`url` and :attr:`sim`, started
    through the test's ``worker_factory`` and ``producer_factory`` (stopped at teardown)."""

    url: str
    sim: Simulator
    workers: Callable[..., WorkerProcess]
    producers: Callable[..., ProducerProcess]

    def worker(self, **options: Any) -> WorkerProcess:
        return self.workers(self.url, **options)

    def producer(self, **options: Any) -> ProducerProcess:
        return self.producers(self.url, self.sim, **options)
