"""Operations fixtures: the compose deployment's services running here, shared by the package.

Starting the stack (simulator, two workers, producer) costs a few seconds, so it is started
once for ``tests/ops``; a test that stops or pauses a service starts it again (``stack``
fixture) before the next test runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from alpaca_broker.redis_server import RedisServer
from tests.harness.compose import load_compose
from tests.harness.stack import OpsStack


@pytest.fixture(scope="package")
def compose() -> dict[str, Any]:
    return load_compose()


@pytest.fixture(scope="package")
def ops_redis(
    compose: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RedisServer]:
    """A Redis of the compose file's settings (AOF fsynced every second, noeviction, and
    the compose file's maxmemory, set once it runs)."""
    server = RedisServer(tmp_path_factory.mktemp("ops-redis"), fsync="everysec")
    server.start()
    options = compose["services"]["redis"]["command"][1:]
    maxmemory = dict(zip(options[::2], options[1::2], strict=True))["--maxmemory"]
    redis.Redis.from_url(server.url).config_set("maxmemory", maxmemory)
    yield server
    server.stop()


@pytest.fixture(scope="package")
def running_stack(
    compose: dict[str, Any], ops_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OpsStack]:
    stack = OpsStack(compose, ops_redis, Path(tmp_path_factory.mktemp("ops-stack")))
    try:
        stack.up()
        yield stack
    finally:
        stack.down()


@pytest.fixture
def stack(running_stack: OpsStack) -> OpsStack:
    """The running stack, every service up (restarted if an earlier test stopped one)."""
    running_stack.ensure_up()
    return running_stack
