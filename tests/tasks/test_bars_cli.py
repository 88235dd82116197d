"""``alpaca-broker bars``: the history from a real Redis, and one line when Redis is down."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import redis

from alpaca_broker.bars import since_ms, without_password
from alpaca_broker.keys import Keys
from alpaca_broker.timestamps import format_ns
from tasks.price_events import prepare_price
from tasks.publisher import Publisher
from tests.tasks.payloads import bar

MINUTE_NS = 60_000_000_000


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "alpaca_broker", "bars", *args],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_since_and_password_are_parsed() -> None:
    assert since_ms("30m", 10_000_000) == 10_000_000 - 1_800_000
    assert since_ms("1970-01-01T00:00:01Z", 0) == 1000
    assert since_ms(None, 5) is None
    with pytest.raises(ValueError, match=r".+"):
        since_ms("yesterday", 0)
    assert without_password("redis://:pw@host:1/0") == "redis://:***@host:1/0"


def test_bars_prints_the_history_since(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    now = (time.time_ns() // MINUTE_NS) * MINUTE_NS
    publisher = Publisher(client, Keys(), stream_maxlen=1000, dedupe_ttl=60)
    publisher.publish_prices(
        [prepare_price(bar("SPY", now - i * MINUTE_NS, float(i)), now) for i in range(5)]
    )
    client.close()
    everything = run_cli({"REDIS_URL": redis_url}, "spy")
    assert everything.returncode == 0, everything.stderr
    assert [json.loads(line)["close"] for line in everything.stdout.splitlines()] == [
        4.0, 3.0, 2.0, 1.0, 0.0
    ]  # fmt: skip
    since = format_ns(now - 2 * MINUTE_NS)  # absolute: no race with the minute turning
    recent = run_cli({"REDIS_URL": redis_url}, "SPY", "--since", since)
    assert [json.loads(line)["close"] for line in recent.stdout.splitlines()] == [2.0, 1.0, 0.0]


def test_unreachable_redis_is_one_line_naming_the_url() -> None:
    result = run_cli({"REDIS_URL": "redis://:secret@127.0.0.1:1/0"}, "SPY")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "redis://:***@127.0.0.1:1/0" in result.stderr
    assert "secret" not in result.stderr
