"""TLS settings (REDIS_TLS_*, REDIS_SENTINEL_PASSWORD/TLS) and the options every client gets
from them: verified certificates and host names, on the output client, the Celery broker
(plain, through Sentinel, the prices' own) and the Sentinel connections. The real handshakes
are tests/e2e/test_tls.py."""

from __future__ import annotations

import shutil
import ssl
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.sentinel import SentinelConnectionPool

from alpaca_broker.errors import ConfigError
from alpaca_broker.redis_client import broker_options, connect, sentinel_manager, tls_options
from alpaca_broker.settings import Settings, load_settings
from celery_app.config import celery_config, worker_broker
from tests.foundation.test_settings import _run
from tests.harness.tls import TestCA
from tests.harness.workers import REPO

SENTINELS = {"REDIS_SENTINELS": "10.0.0.1:26379", "REDIS_SENTINEL_MASTER": "mymaster"}


def _settings(**env: str) -> Settings:
    values: dict[str, Any] = {"_env_file": None, **env}
    return Settings(**values)


@pytest.fixture(autouse=True)
def _no_cached_settings() -> Iterator[None]:
    load_settings.cache_clear()
    yield
    load_settings.cache_clear()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("no openssl command to make certificates")
    root = tmp_path_factory.mktemp("certs")
    ours, other = TestCA(root / "ours", "ours"), TestCA(root / "other", "other")
    cert, key = ours.issue("client")
    _, other_key = other.issue("other")
    return {"ca": ours.cert, "cert": cert, "key": key, "other_key": other_key}


def test_tls_defaults_verify_against_the_system_cas_and_check_host_names() -> None:
    settings = _settings()
    assert tls_options(settings) == {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_check_hostname": True}
    assert settings.redis_sentinel_password is None
    assert not settings.sentinel_tls  # REDIS_URL is redis://


def test_sentinels_speak_tls_when_redis_url_does_unless_told_otherwise() -> None:
    assert _settings(REDIS_URL="rediss://h:1/0").sentinel_tls
    assert not _settings(REDIS_URL="rediss://h:1/0", REDIS_SENTINEL_TLS="false").sentinel_tls
    assert _settings(REDIS_URL="redis://h:1/0", REDIS_SENTINEL_TLS="true").sentinel_tls


def test_output_client_of_a_rediss_url_gets_the_ca_the_client_certificate_and_host_checks(
    certs: dict[str, Path],
) -> None:
    env = {
        "REDIS_URL": "rediss://:pw@redis.example:6380/0",
        "REDIS_TLS_CA_FILE": str(certs["ca"]),
        "REDIS_TLS_CERT_FILE": str(certs["cert"]),
        "REDIS_TLS_KEY_FILE": str(certs["key"]),
    }
    kwargs = connect(_settings(**env)).connection_pool.connection_kwargs
    assert kwargs["ssl_ca_certs"] == str(certs["ca"])
    assert kwargs["ssl_certfile"] == str(certs["cert"])
    assert kwargs["ssl_keyfile"] == str(certs["key"])
    assert kwargs["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    assert kwargs["ssl_check_hostname"] is True
    plain = connect(_settings(REDIS_URL="redis://h:1/0", REDIS_TLS_CA_FILE=str(certs["ca"])))
    assert "ssl_ca_certs" not in plain.connection_pool.connection_kwargs


def test_sentinel_connections_carry_their_password_and_tls_and_the_primary_its_tls(
    certs: dict[str, Path],
) -> None:
    settings = _settings(
        REDIS_URL="rediss://:pw@ignored:1/0",
        REDIS_TLS_CA_FILE=str(certs["ca"]),
        REDIS_SENTINEL_PASSWORD="sentinel-pw",
        **SENTINELS,
    )
    (sentinel,) = sentinel_manager(settings).sentinels
    to_sentinel = sentinel.connection_pool.connection_kwargs
    assert to_sentinel["password"] == "sentinel-pw"
    assert to_sentinel["ssl_ca_certs"] == str(certs["ca"])
    assert to_sentinel["ssl_check_hostname"] is True
    assert sentinel.connection_pool.connection_class.__name__ == "SSLConnection"
    pool = connect(settings).connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.connection_class.__name__ == "SentinelManagedSSLConnection"
    assert pool.connection_kwargs["ssl_ca_certs"] == str(certs["ca"])
    assert pool.connection_kwargs["password"] == "pw"


def test_celery_broker_over_rediss_verifies_and_plain_redis_has_no_tls(
    certs: dict[str, Path],
) -> None:
    tls = _settings(REDIS_URL="rediss://:pw@h:6380/0", REDIS_TLS_CA_FILE=str(certs["ca"]))
    assert celery_config(tls)["broker_use_ssl"] == {
        "ssl_cert_reqs": ssl.CERT_REQUIRED,
        "ssl_check_hostname": True,
        "ssl_ca_certs": str(certs["ca"]),
    }
    assert celery_config(_settings(REDIS_URL="redis://h:6379/0"))["broker_use_ssl"] is False


def test_celery_broker_through_sentinel_keeps_tls_to_the_primary_and_to_the_sentinels() -> None:
    settings = _settings(
        REDIS_URL="rediss://:pw@ignored:1/0", REDIS_SENTINEL_PASSWORD="sentinel-pw", **SENTINELS
    )
    options = broker_options(settings)
    assert options is not None
    url = options[0]
    assert url.startswith("sentinel://")  # which cannot say TLS: broker_use_ssl does
    config = celery_config(settings)
    assert config["broker_use_ssl"]["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    sentinel_kwargs = config["broker_transport_options"]["sentinel_kwargs"]
    assert sentinel_kwargs["ssl"] is True
    assert sentinel_kwargs["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    assert sentinel_kwargs["password"] == "sentinel-pw"


def test_prices_broker_of_its_own_gets_its_own_tls_choice() -> None:
    settings = _settings(
        REDIS_URL="redis://h:6379/0", CELERY_PRICES_BROKER_URL="rediss://prices:6380/0"
    )
    assert celery_config(settings)["broker_use_ssl"] is False
    assert celery_config(settings, "prices")["broker_use_ssl"]["ssl_check_hostname"] is True
    assert worker_broker(settings, "prices")["broker_use_ssl"]["ssl_check_hostname"] is True


def test_secret_values_hold_the_sentinel_password_and_a_query_password() -> None:
    settings = _settings(
        REDIS_URL="redis://h:6379/0?password=query%2Fpw", REDIS_SENTINEL_PASSWORD="sentinel-pw"
    )
    assert {"sentinel-pw", "query%2Fpw", "query/pw"} <= set(settings.secret_values())


@pytest.mark.parametrize(
    "variable", ["REDIS_TLS_CA_FILE", "REDIS_TLS_CERT_FILE", "REDIS_TLS_KEY_FILE"]
)
def test_a_missing_tls_file_is_a_config_error_naming_the_variable(
    variable: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(variable, str(tmp_path / "absent.pem"))
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert caught.value.variable == variable
    assert "absent.pem" in caught.value.reason


def test_a_key_without_its_certificate_is_a_config_error(
    certs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_TLS_KEY_FILE", str(certs["key"]))
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert caught.value.variable == "REDIS_TLS_KEY_FILE"


def test_tls_files_that_do_not_load_are_config_errors(
    certs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_TLS_CA_FILE", str(certs["key"]))  # a key, not a certificate
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert caught.value.variable == "REDIS_TLS_CA_FILE"
    load_settings.cache_clear()
    monkeypatch.setenv("REDIS_TLS_CA_FILE", str(certs["ca"]))
    monkeypatch.setenv("REDIS_TLS_CERT_FILE", str(certs["cert"]))
    monkeypatch.setenv("REDIS_TLS_KEY_FILE", str(certs["other_key"]))  # not this cert's key
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert caught.value.variable == "REDIS_TLS_CERT_FILE"
    load_settings.cache_clear()
    monkeypatch.setenv("REDIS_TLS_KEY_FILE", str(certs["key"]))
    assert load_settings().redis_tls_key_file == certs["key"]


def test_a_command_with_a_missing_ca_file_exits_2_with_one_line(tmp_path: Path) -> None:
    missing = str(tmp_path / "ca.pem")
    result = _run(
        [sys.executable, "-m", "alpaca_broker", "health"], tmp_path, REDIS_TLS_CA_FILE=missing
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"alpaca-broker: configuration error: REDIS_TLS_CA_FILE: no readable file {missing!r}"
    ]


def test_a_worker_with_a_missing_ca_file_exits_2_naming_it(tmp_path: Path) -> None:
    result = _run(
        [sys.executable, "-m", "celery", "-A", "celery_app", "worker"],
        REPO,
        REDIS_TLS_CA_FILE=str(tmp_path / "ca.pem"),
    )
    assert result.returncode == 2
    assert "REDIS_TLS_CA_FILE" in result.stderr.strip().splitlines()[-1]


def test_tls_options_in_a_redis_url_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """redis-py lets a URL's ?ssl_cert_reqs=none override the verification."""
    monkeypatch.setenv("CELERY_BROKER_URL", "rediss://h:6380/0?ssl_cert_reqs=none")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert caught.value.variable == "CELERY_BROKER_URL"
    assert "ssl_cert_reqs" in caught.value.reason
