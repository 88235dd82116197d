"""Shared fixtures: a real Redis per session, a clean database per test, real Celery workers.

pytest-celery 1.x is installed (it is a test extra) but switched off with ``-p no:celery``
in pyproject.toml: its ``celery_worker`` fixture needs Docker. Workers here are either
subprocesses (``worker_factory``: real prefork, killable) or ``start_worker`` threads
(``inproc_worker``: fast, for tests that need no crash semantics).
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

from alpaca_broker.redis_server import RedisServer
from tests.harness.workers import WorkerProcess

EXTERNAL_REDIS = os.environ.get("REDIS_URL")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer | None]:
    """The session's Redis: REDIS_URL when given (tests flush it!), else our own server."""
    if EXTERNAL_REDIS:
        yield None
        return
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer | None) -> str:
    """A URL to an empty database."""
    url = redis_server.url if redis_server else str(EXTERNAL_REDIS)
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
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis server owned by one test, which may kill and restart it."""
    server = RedisServer(tmp_path / "own-redis")
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
    app.conf.broker_url = redis_url
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
