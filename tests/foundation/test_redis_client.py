"""Sentinel settings and the one Redis client factory: validation, URL options, broker URL."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.sentinel import SentinelConnectionPool

from alpaca_broker.errors import ConfigError
from alpaca_broker.redis_client import broker_options, connect, url_options
from alpaca_broker.settings import Settings, load_settings
from celery_app.config import celery_config, create_app
from tests.foundation.test_settings import _run


def _settings(**env: str) -> Settings:
    values: dict[str, Any] = {"_env_file": None, **env}
    return Settings(**values)


@pytest.fixture(autouse=True)
def _no_cached_settings():
    load_settings.cache_clear()
    yield
    load_settings.cache_clear()


def test_sentinel_list_without_master_name_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REDIS_SENTINELS", "127.0.0.1:26379")
    monkeypatch.delenv("REDIS_SENTINEL_MASTER", raising=False)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert caught.value.variable == "REDIS_SENTINEL_MASTER"


def test_malformed_sentinel_address_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_SENTINELS", "127.0.0.1:26379,nohost")
    monkeypatch.setenv("REDIS_SENTINEL_MASTER", "mymaster")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert caught.value.variable == "REDIS_SENTINELS"


def test_worker_with_sentinels_but_no_master_exits_2_with_one_line(tmp_path: Path) -> None:
    result = _run(
        [sys.executable, "-m", "alpaca_broker", "health"],
        tmp_path,
        REDIS_SENTINELS="127.0.0.1:26379,127.0.0.1:26380",
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "alpaca-broker: configuration error: REDIS_SENTINEL_MASTER: "
        "is required when REDIS_SENTINELS is set"
    ]


def test_redis_url_gives_password_database_and_tls_only() -> None:
    assert url_options("rediss://u:p%40ss@h:1/3") == {
        "username": "u",
        "password": "p@ss",
        "db": 3,
        "ssl": True,
    }
    assert url_options("redis://localhost:6379") == {"db": 0}


def test_connect_without_sentinels_is_the_plain_url_client() -> None:
    client = connect(_settings(REDIS_URL="redis://127.0.0.1:6390/2"))
    assert client.connection_pool.connection_kwargs["port"] == 6390
    assert not isinstance(client.connection_pool, SentinelConnectionPool)


def test_connect_with_sentinels_is_a_sentinel_managed_client() -> None:
    settings = _settings(
        REDIS_URL="redis://:pw@ignored:1/4",
        REDIS_SENTINELS="127.0.0.1:26379, 127.0.0.1:26380",
        REDIS_SENTINEL_MASTER="mymaster",
    )
    client = connect(settings, decode_responses=True)
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.service_name == "mymaster"
    assert pool.connection_kwargs["password"] == "pw"
    assert pool.connection_kwargs["db"] == 4
    assert isinstance(client, redis.Redis)


def test_celery_broker_goes_through_sentinel_unless_another_broker_is_named() -> None:
    env = {
        "REDIS_URL": "redis://:p%3Bw@ignored:1/2",
        "REDIS_SENTINELS": "10.0.0.1:26379,10.0.0.2:26379",
        "REDIS_SENTINEL_MASTER": "mymaster",
    }
    options = broker_options(_settings(**env))
    assert options is not None
    url, transport = options
    assert url == "sentinel://:p%3Bw@10.0.0.1:26379/2;sentinel://:p%3Bw@10.0.0.2:26379/2"
    assert transport["master_name"] == "mymaster"
    config = celery_config(_settings(**env))
    assert config["broker_url"] == url
    assert config["broker_transport_options"]["master_name"] == "mymaster"
    assert config["broker_channel_error_retry"] is True
    other = _settings(**env, CELERY_BROKER_URL="redis://broker:6379/0")
    assert broker_options(other) is None
    assert celery_config(other)["broker_url"] == "redis://broker:6379/0"


@pytest.mark.parametrize(
    "broker",
    [
        "redis://:p%3Bw@127.0.0.1:6379/2",  # the same URL as REDIS_URL
        "redis://:p%3Bw@localhost/2",  # the same Redis, spelled otherwise
    ],
)
def test_celery_broker_naming_the_output_redis_still_goes_through_sentinel(broker: str) -> None:
    env = {
        "REDIS_URL": "redis://:p%3Bw@127.0.0.1:6379/2",
        "REDIS_SENTINELS": "10.0.0.1:26379,10.0.0.2:26379",
        "REDIS_SENTINEL_MASTER": "mymaster",
    }
    settings = _settings(**env, CELERY_BROKER_URL=broker)
    assert settings.broker_is_output
    options = broker_options(settings)
    assert options is not None
    url, transport = options
    assert url == "sentinel://:p%3Bw@10.0.0.1:26379/2;sentinel://:p%3Bw@10.0.0.2:26379/2"
    assert transport["master_name"] == "mymaster"
    config = celery_config(settings)
    assert config["broker_url"] == url
    assert config["broker_transport_options"]["master_name"] == "mymaster"


def test_celery_broker_through_sentinel_keeps_the_broker_urls_own_credentials() -> None:
    settings = _settings(
        REDIS_URL="redis://app:app-pw@127.0.0.1:6379/0",
        CELERY_BROKER_URL="redis://celery:broker%2Fpw@127.0.0.1:6379/0",
        REDIS_SENTINELS="10.0.0.1:26379",
        REDIS_SENTINEL_MASTER="mymaster",
    )
    options = broker_options(settings)
    assert options is not None
    assert options[0] == "sentinel://celery:broker%2Fpw@10.0.0.1:26379/0"


def test_celery_broker_on_another_database_of_the_same_host_keeps_its_own_url() -> None:
    settings = _settings(
        REDIS_URL="redis://127.0.0.1:6379/0",
        CELERY_BROKER_URL="redis://127.0.0.1:6379/1",
        REDIS_SENTINELS="10.0.0.1:26379",
        REDIS_SENTINEL_MASTER="mymaster",
    )
    assert broker_options(settings) is None
    assert celery_config(settings)["broker_url"] == "redis://127.0.0.1:6379/1"


def test_redis_url_database_may_be_a_query_parameter() -> None:
    assert url_options("redis://h:1?db=5") == {"db": 5}


def test_celery_app_uses_the_sentinel_broker_though_celery_broker_url_is_in_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Celery itself reads CELERY_BROKER_URL from the environment, before its broker_url.
    url = "redis://127.0.0.1:6379/0"
    monkeypatch.setenv("CELERY_BROKER_URL", url)
    settings = _settings(
        REDIS_URL=url,
        CELERY_BROKER_URL=url,
        REDIS_SENTINELS="10.0.0.1:26379",
        REDIS_SENTINEL_MASTER="mymaster",
    )
    app = create_app(settings)
    for connection in (app.connection_for_write(), app.connection_for_read(), app.connection()):
        where = (connection.transport_cls, connection.hostname, connection.port)
        assert where == ("sentinel", "10.0.0.1", 26379)
        connection.release()
