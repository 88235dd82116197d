"""End-to-end fixtures: the simulator (in this process), real workers and producer processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from alpaca_broker.redis_server import RedisServer
from simulator.api import Simulator
from tests.harness.event_check import EventWatcher, event_validator, invalid_events
from tests.harness.pipeline import Pipeline
from tests.harness.producer import ProducerProcess
from tests.harness.workers import WorkerProcess


@pytest.fixture
def sim() -> Iterator[Simulator]:
    """A scripted simulator (no synthetic market unless a test switches it on)."""
    with Simulator() as simulator:
        yield simulator


@pytest.fixture
def synthetic_sim() -> Iterator[Simulator]:
    """A lively synthetic market on every stream (stocks, crypto, options, news, orders)."""
    with Simulator(synthetic=True, rate=200, seed=5) as simulator:
        yield simulator


def sim_env(sim: Simulator) -> dict[str, str]:
    """The producer's URL settings for ``sim``."""
    return dict(line.split("=", 1) for line in sim.env_lines())


@pytest.fixture
def producer_factory(tmp_path: Path) -> Iterator[Callable[..., ProducerProcess]]:
    """Start producer processes (``factory(redis_url, sim, streams=..., **env)``)."""
    started: list[ProducerProcess] = []

    def factory(redis_url: str, simulator: Simulator, **options: Any) -> ProducerProcess:
        log = tmp_path / f"producer-{len(started)}.log"
        producer = ProducerProcess(redis_url, sim_env(simulator), log, **options)
        started.append(producer)
        return producer.start()

    yield factory
    for producer in started:
        producer.stop()


@pytest.fixture
def pipeline_on(
    sim: Simulator,
    worker_factory: Callable[..., WorkerProcess],
    producer_factory: Callable[..., ProducerProcess],
) -> Callable[[str], Pipeline]:
    """``pipeline_on(url)``: workers and producers on that Redis and this test's ``sim``."""
    return partial(Pipeline, sim=sim, workers=worker_factory, producers=producer_factory)


@pytest.fixture
def pipeline(pipeline_on: Callable[[str], Pipeline], redis_url: str) -> Pipeline:
    """Workers and producers on this test's database (``redis_url``) and ``sim``."""
    return pipeline_on(redis_url)


@pytest.fixture
def own_pipeline(pipeline_on: Callable[[str], Pipeline], own_redis: RedisServer) -> Pipeline:
    """Workers and producers on the test's own Redis server (``own_redis``) and ``sim``."""
    return pipeline_on(own_redis.url)


@pytest.fixture(autouse=True)
def events_match_their_schemas(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every event a test's pipeline publishes (channels) or keeps (hashes, streams, bar
    histories) on the test's ``redis_url`` validates against the shipped JSON Schemas."""
    if "redis_url" not in request.fixturenames:
        yield
        return
    watcher = EventWatcher(request.getfixturevalue("redis_url"))
    yield
    problems = invalid_events(event_validator(), watcher.stop())
    assert not problems, "events that break their JSON Schema:\n" + "\n".join(problems[:20])
