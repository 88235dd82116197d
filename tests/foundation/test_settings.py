"""Settings: the contract's variables, one-line errors (exit 2), secrets that never print."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from alpaca_broker.errors import ConfigError
from alpaca_broker.logs import set_component, setup_logging
from alpaca_broker.settings import Settings, load_settings
from tests.harness.workers import REPO, process_env

SECRET = "SK-do-not-print-7c1f"
KEY = "PK-do-not-print-3b9e"


def _run(argv: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = process_env("redis://127.0.0.1:1/0")
    full.update(env)
    return subprocess.run(argv, cwd=cwd, env=full, capture_output=True, text=True, timeout=60)


@pytest.fixture(autouse=True)
def _no_cached_settings():
    load_settings.cache_clear()
    yield
    load_settings.cache_clear()


def test_defaults_match_the_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    s = Settings(_env_file=None)
    assert (s.alpaca_paper, s.alpaca_feed, s.alpaca_symbols) == (True, "iex", ("SPY",))
    assert s.alpaca_data_channels == ("trades", "quotes", "bars")
    assert s.redis_url == "redis://localhost:6379/0"
    assert s.broker_url == s.redis_url
    assert s.redis_key_prefix == "alpaca"
    assert s.data_stream_url == "wss://stream.data.alpaca.markets/v2/iex"
    assert s.trading_stream_url == "wss://paper-api.alpaca.markets/stream"
    assert s.trading_api_url == "https://paper-api.alpaca.markets"


def test_lists_aliases_and_live_urls_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APCA_API_KEY_ID", KEY)
    monkeypatch.setenv("APCA_API_SECRET_KEY", SECRET)
    monkeypatch.setenv("ALPACA_SYMBOLS", "aapl, msft")
    monkeypatch.setenv("ALPACA_DATA_CHANNELS", "trades,statuses,lulds")
    monkeypatch.setenv("ALPACA_PAPER", "false")
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://127.0.0.1:6380/1")
    s = Settings(_env_file=None)
    assert s.credentials() == (KEY, SECRET)
    assert s.alpaca_symbols == ("AAPL", "MSFT")
    assert s.alpaca_data_channels == ("trades", "statuses", "lulds")
    assert s.trading_stream_url == "wss://api.alpaca.markets/stream"
    assert s.broker_url == "redis://127.0.0.1:6380/1"


def test_environment_wins_over_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("ALPACA_FEED=sip\nALPACA_SYMBOLS=QQQ\n")
    monkeypatch.setenv("ALPACA_SYMBOLS", "IWM")
    s = Settings(_env_file=dotenv)
    assert (s.alpaca_feed, s.alpaca_symbols) == ("sip", ("IWM",))


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ALPACA_FEED", "opra"),
        ("ALPACA_PAPER", "perhaps"),
        ("ALPACA_DATA_CHANNELS", "trades,orderbooks"),
        ("REDIS_URL", "http://localhost:6379"),
        ("ALPACA_DATA_STREAM_URL", "http://not-a-websocket"),
        ("REDIS_KEY_PREFIX", "has space"),
    ],
)
def test_invalid_value_raises_config_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert caught.value.variable == variable
    assert value not in str(caught.value)  # a rejected value may be a secret


def test_producer_with_invalid_setting_exits_2_with_one_line(tmp_path: Path) -> None:
    result = _run(
        [sys.executable, "-m", "alpaca_broker", "producer"],
        tmp_path,
        ALPACA_API_KEY=KEY,
        ALPACA_SECRET_KEY=SECRET,
        ALPACA_FEED="opra",
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "ALPACA_FEED" in lines[0]


def test_producer_without_credentials_exits_2_naming_the_key(tmp_path: Path) -> None:
    result = _run([sys.executable, "-m", "alpaca_broker", "producer"], tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "alpaca-broker: configuration error: ALPACA_API_KEY: is required (or APCA_API_KEY_ID)"
    ]


def test_worker_with_invalid_redis_url_exits_2_naming_it(tmp_path: Path) -> None:
    result = _run(
        [sys.executable, "-m", "celery", "-A", "celery_app", "worker"],
        REPO,
        REDIS_URL="http://nowhere",
    )
    assert result.returncode == 2
    assert "REDIS_URL" in result.stderr.strip().splitlines()[-1]


def test_secrets_never_appear_in_repr_or_str(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALPACA_API_KEY", KEY)
    monkeypatch.setenv("ALPACA_SECRET_KEY", SECRET)
    monkeypatch.setenv("REDIS_URL", f"redis://:{SECRET}@127.0.0.1:6379/0")
    s = Settings(_env_file=None)
    for text in (repr(s), str(s), repr(s.alpaca_secret_key), f"{s.alpaca_api_key}"):
        assert SECRET not in text
        assert KEY not in text


def test_log_lines_redact_secrets_in_text_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    log = logging.getLogger("tests.secrets")
    for fmt in ("text", "json"):  # both formats, one after the other
        setup_logging("producer", fmt=fmt, secrets=(KEY, SECRET))
        set_component("producer.prices")
        log.warning("auth with %s / %s failed", KEY, SECRET)
    err = capsys.readouterr().err
    assert SECRET not in err
    assert KEY not in err
    text_line, json_line = err.strip().splitlines()
    assert "[producer.prices]" in text_line
    assert "auth with *** / *** failed" in text_line
    doc = json.loads(json_line)
    assert doc["component"] == "producer.prices"
    assert doc["level"] == "WARNING"
    assert doc["message"] == "auth with *** / *** failed"


def test_worker_logs_never_show_the_credentials(redis_url, redis_client, worker_factory) -> None:
    env = {"ALPACA_API_KEY": KEY, "ALPACA_SECRET_KEY": SECRET}
    worker = worker_factory(
        redis_url, app="tests.harness.probe_tasks", queues="orders", env=env,
        extra_args=("-l", "DEBUG"),
    )  # fmt: skip
    from celery_app.config import create_app

    create_app(Settings(REDIS_URL=redis_url, _env_file=None)).send_task("orders.probe", ["s", "x"])
    from tests.harness.wait import wait_until

    wait_until(lambda: redis_client.llen("s:done") == 1, 15)
    assert "[worker]" in worker.log()
    assert SECRET not in worker.log()
    assert KEY not in worker.log()


def _settings(**env: str) -> Settings:
    values: dict[str, Any] = {"_env_file": None, **env}
    return Settings(**values)


@pytest.mark.parametrize(
    ("broker", "same"),
    [
        (None, True),
        ("", True),
        ("redis://localhost:6379/0", True),
        ("redis://127.0.0.1:6379/0", True),
        ("redis://127.0.0.1", True),  # default port and database
        ("redis://[::1]:6379/0", True),
        ("redis://LOCALHOST.:6379?db=0", True),
        ("redis://broker-user:other-secret@127.0.0.1:6379/0", True),  # credentials aside
        ("rediss://127.0.0.1:6379/0", True),
        ("redis://127.0.0.1:6380/0", False),  # another server
        ("redis://127.0.0.1:6379/1", False),  # another database
        ("redis://127.0.0.1:6379?db=1", False),
        ("redis://broker.internal:6379/0", False),  # another host (no name is resolved)
        ("unix:///tmp/redis.sock", False),
    ],
)
def test_broker_is_the_output_redis_when_it_names_the_same_server_and_database(
    broker: str | None, same: bool
) -> None:
    env = {"REDIS_URL": "redis://:pw@localhost:6379/0"}
    if broker is not None:
        env["CELERY_BROKER_URL"] = broker
    assert _settings(**env).broker_is_output is same


def test_unix_socket_urls_name_the_same_redis_by_path_and_database() -> None:
    output = "unix:///run/redis.sock?db=2"
    assert _settings(REDIS_URL=output, CELERY_BROKER_URL=output).broker_is_output
    other_db = _settings(REDIS_URL=output, CELERY_BROKER_URL="unix:///run/redis.sock?db=3")
    assert not other_db.broker_is_output


def test_prices_broker_is_apart_only_when_it_names_another_redis_than_the_broker() -> None:
    output = "redis://localhost:6379/0"
    assert not _settings(REDIS_URL=output).prices_broker_apart
    spelled_apart = _settings(REDIS_URL=output, CELERY_PRICES_BROKER_URL="redis://127.0.0.1/0")
    assert not spelled_apart.prices_broker_apart
    elsewhere = _settings(REDIS_URL=output, CELERY_PRICES_BROKER_URL="redis://127.0.0.1:6380/0")
    assert elsewhere.prices_broker_apart
