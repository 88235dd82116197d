"""Shared fixtures: a real Redis per session, a clean database per test, real Celery workers.

pytest-celery 1.x is installed (it is a test extra) but switched off with ``-p no:celery``
in pyproject.toml: its ``celery_worker`` fixture needs Docker. Workers here are either
subprocesses (``worker_factory``: real prefork, killable) or ``start_worker`` threads
(``inproc_worker``: fast, for tests that need no crash semantics).

Every Redis these fixtures start is of the test's ``redis_flavor`` (Valkey, Redis 6.2 or
Redis 7+): ``ALPACA_TEST_REDIS`` picks it, and an ``order_path`` test is parametrised over
the flavours it runs on (tests/harness/redis_flavors.py).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

from alpaca_broker.redis_server import Flavor, RedisServer
from tests.harness import redis_flavors
from tests.harness.workers import WorkerProcess

EXTERNAL_REDIS = os.environ.get("REDIS_URL")


def pytest_configure(config: pytest.Config) -> None:
    try:
        redis_flavors.requested()
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.addinivalue_line(
        "markers",
        "order_path: an order-path fault test, run on each Redis flavour ALPACA_TEST_REDIS "
        "names (all: every flavour; unset: Valkey; with every_redis=True also Redis 6.2 and 7+)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """An ``order_path`` test runs once per flavour it is given (its id names the flavour)."""
    marker = metafunc.definition.get_closest_marker("order_path")
    if marker is None or "redis_flavor" not in metafunc.fixturenames:
        return
    flavors = redis_flavors.flavors_for(True, bool(marker.kwargs.get("every_redis")))
    metafunc.parametrize("redis_flavor", flavors, indirect=True, ids=list(flavors))


@pytest.fixture
def redis_flavor(request: pytest.FixtureRequest) -> Flavor:
    """The test's Redis flavour: its parameter, else the run's
    (:func:`tests.harness.redis_flavors.require`)."""
    return redis_flavors.require(getattr(request, "param", None) or redis_flavors.run_flavor())


@pytest.fixture(scope="session")
def redis_servers(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[Flavor], RedisServer]]:
    """``redis_servers(flavor)``: the session's server of that flavour, started when first
    asked for; all stopped at the session's end."""
    started: dict[Flavor, RedisServer] = {}

    def server(flavor: Flavor) -> RedisServer:
        if flavor not in started:
            started[flavor] = RedisServer(tmp_path_factory.mktemp(f"redis-{flavor}"), flavor=flavor)
            started[flavor].start()
        return started[flavor]

    yield server
    for running in started.values():
        running.stop()


@pytest.fixture(scope="session")
def redis_server(redis_servers: Callable[[Flavor], RedisServer]) -> RedisServer | None:
    """The session's Redis of the run's flavour: None when REDIS_URL is given (tests flush
    it!), else our own server."""
    if EXTERNAL_REDIS:
        return None
    return redis_servers(redis_flavors.require(redis_flavors.run_flavor()))


@pytest.fixture
def redis_url(
    redis_flavor: Flavor,
    redis_server: RedisServer | None,
    redis_servers: Callable[[Flavor], RedisServer],
) -> str:
    """A URL to an empty database, on a server of the test's flavour."""
    if redis_flavor == redis_flavors.run_flavor():
        url = redis_server.url if redis_server else str(EXTERNAL_REDIS)
    else:
        url = redis_servers(redis_flavor).url
    redis.Redis.from_url(url).flushdb()
    return url


def _client(url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    yield from _client(redis_url)


@pytest.fixture
def own_redis(tmp_path: Path, redis_flavor: Flavor) -> Iterator[RedisServer]:
    """A Redis server (of the test's flavour) owned by one test, which may kill and restart
    it."""
    server = RedisServer(tmp_path / "own-redis", flavor=redis_flavor)
    server.start()
    yield server
    server.stop(kill=True)


@pytest.fixture
def own_client(own_redis: RedisServer) -> Iterator[redis.Redis]:
    """A client of ``own_redis`` (it reconnects when the test restarts the server)."""
    yield from _client(own_redis.url)


@pytest.fixture
def inproc_worker(redis_url: str) -> Iterator[Celery]:
    """The real app with its real tasks, consumed by a ``start_worker`` thread (solo pool).

    Fast, and enough where no crash semantics are tested. Yields the app, configured for
    this test's Redis (broker and publisher both).
    """
    from celery.contrib.testing.worker import start_worker

    from alpaca_broker.settings import load_settings
    from celery_app import app
    from tasks.publisher import reset_publisher

    previous = os.environ.get("REDIS_URL")
    root = logging.getLogger()
    root_state = (root.level, list(root.handlers))  # the worker's logging setup replaces them
    os.environ["REDIS_URL"] = redis_url  # the tasks' publisher reads the settings
    load_settings.cache_clear()
    reset_publisher()
    app.conf.broker_url = app.conf.broker_read_url = app.conf.broker_write_url = redis_url
    try:
        with start_worker(app, pool="solo", queues=["prices", "orders"], perform_ping_check=False):
            yield app
    finally:
        if previous is None:
            os.environ.pop("REDIS_URL", None)
        else:
            os.environ["REDIS_URL"] = previous
        load_settings.cache_clear()
        reset_publisher()
        root.setLevel(root_state[0])
        root.handlers[:] = root_state[1]


@pytest.fixture
def worker_factory(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start subprocess workers (``factory(redis_url, **options)``); all stopped at teardown."""
    started: list[WorkerProcess] = []

    def factory(redis_url: str, **options: Any) -> WorkerProcess:
        log = tmp_path / f"worker-{len(started)}.log"
        worker = WorkerProcess(redis_url, log, **options)
        started.append(worker)
        return worker.start()

    yield factory
    for worker in started:
        worker.stop()
