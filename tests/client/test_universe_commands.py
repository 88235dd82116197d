"""``alpaca-broker subscribe``/``unsubscribe``/``subscriptions`` and the client's same operations
against a real Redis, no producer: what reaches ``P:universe:{STREAM}``, the change message
on ``P:universe:changes``, one line per change, exit 2 on bad input, 1 without Redis."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest
import redis

from alpaca_broker import subscriptions as commands
from alpaca_broker.aioclient import AsyncBrokerClient
from alpaca_broker.client import BrokerClient
from alpaca_broker.keys import Keys
from alpaca_broker.settings import load_settings
from alpaca_broker.universe import BadSymbol, UnknownStream
from tests.harness.wait import wait_until
from tests.harness.workers import REPO, process_env

KEYS = Keys()


@pytest.fixture
def env(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This process's settings: the test's Redis, ALPACA_SYMBOLS=SPY,QQQ."""
    for name in ("ALPACA_SYMBOLS", "ALPACA_OPTION_CHANNELS", "REDIS_SENTINELS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("ALPACA_SYMBOLS", "SPY,QQQ")
    monkeypatch.chdir(REPO / "tests")  # no .env here
    load_settings.cache_clear()
    yield
    load_settings.cache_clear()


@pytest.fixture
def changes(redis_client: redis.Redis) -> Iterator[redis.client.PubSub]:
    pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(KEYS.universe_changes)
    wait_until(lambda: pubsub.get_message(timeout=0.05) is None and pubsub.subscribed, 5)
    yield pubsub
    pubsub.close()


def announced(pubsub: redis.client.PubSub) -> list[str]:
    out = []
    while (message := pubsub.get_message(timeout=0.2)) is not None:
        out.append(message["data"])
    return out


def test_subscribe_starts_the_set_from_the_variable_and_announces_each_change(
    env: None,
    redis_client: redis.Redis,
    changes: redis.client.PubSub,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert commands.subscribe_main(["prices", "nvda,AMD", "NVDA"]) == 0
    assert capsys.readouterr().out == (
        "prices: subscribed NVDA AMD (2 added); universe 4 symbols in alpaca:universe:prices, "
        "started from ALPACA_SYMBOLS=SPY,QQQ\n"
    )
    assert redis_client.smembers(KEYS.universe("prices")) == {"SPY", "QQQ", "NVDA", "AMD"}
    assert commands.unsubscribe_main(["prices", "SPY", "QQQ", "NVDA", "AMD"]) == 0
    assert "(4 removed); universe 0 symbols" in capsys.readouterr().out
    assert announced(changes) == ["prices", "prices"]
    assert commands.subscriptions_main(["prices", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)["prices"]
    assert (doc["source"], doc["size"], doc["producers"]) == ("set", 0, {})  # empty, in force

    assert commands.subscriptions_main(["prices", "--reset"]) == 0
    assert capsys.readouterr().out.startswith("prices: reset to ALPACA_SYMBOLS")
    assert commands.subscriptions_main(["prices"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "prices: 2 symbols, from ALPACA_SYMBOLS (no command has changed it)",
        "  QQQ SPY",
        "  no active producer runs this stream (nothing confirmed by Alpaca)",
    ]
    assert announced(changes) == ["prices"]


def test_the_first_change_starts_from_the_variable_the_producer_published(
    env: None, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    redis_client.hset(KEYS.universe_meta("crypto"), "variable", json.dumps(["BTC/USD"]))
    assert commands.subscribe_main(["crypto", "eth/usd"]) == 0
    assert capsys.readouterr().out.endswith("started from ALPACA_CRYPTO_SYMBOLS=BTC/USD\n")
    assert redis_client.smembers(KEYS.universe("crypto")) == {"BTC/USD", "ETH/USD"}


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["orders", "SPY"], "unknown stream 'orders': one of prices, crypto, options, news"),
        (["prices", "BTC/USD"], "'BTC/USD' is not a stock symbol"),
        (["crypto", "BTCUSD"], "'BTCUSD' is not a BASE/QUOTE pair"),
        (["options", "AAPL"], "'AAPL' is not an OCC option contract"),
        (["options", "*"], "'*' is allowed for option trades only"),
        (["prices"], "give at least one symbol"),
    ],
)
def test_a_bad_stream_or_symbol_exits_2_with_one_line_and_changes_nothing(
    env: None,
    redis_client: redis.Redis,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    says: str,
) -> None:
    assert commands.subscribe_main(argv) == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err.count("\n") == 1
    assert out.err.startswith("alpaca-broker subscribe: ")
    assert says in out.err
    assert redis_client.keys("*universe*") == []


def test_reset_needs_a_stream(env: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert commands.subscriptions_main(["--reset"]) == 2
    assert "--reset needs a STREAM" in capsys.readouterr().err


def test_without_redis_each_command_prints_one_line_and_exits_1() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there
    for argv in (["subscribe", "prices", "NVDA"], ["subscriptions"]):
        done = subprocess.run(
            [sys.executable, "-m", "alpaca_broker", *argv],
            env=process_env(f"redis://127.0.0.1:{port}/0"),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 1
        assert done.stdout == ""
        assert done.stderr.count("\n") == 1
        assert done.stderr.startswith(f"alpaca-broker {argv[0]}: cannot reach Redis at ")


def test_the_client_changes_a_universe_as_the_commands_do(
    redis_url: str, redis_client: redis.Redis, changes: redis.client.PubSub
) -> None:
    client = BrokerClient.from_url(redis_url)
    change = client.subscribe("options", ["aapl261218c00150000"], start_from=[])
    assert (change.changed, change.size, change.started_from) == (
        ("AAPL261218C00150000",),
        1,
        (),
    )
    with pytest.raises(BadSymbol):
        client.subscribe("options", ["AAPL"])
    with pytest.raises(UnknownStream):
        client.unsubscribe("orders", ["SPY"])
    doc = client.subscriptions("options")
    assert (doc["symbols"], doc["source"]) == (["AAPL261218C00150000"], "set")
    assert client.unsubscribe("options", ["AAPL261218C00150000"]).size == 0
    assert client.reset_subscriptions("options") == 0
    assert client.subscriptions("options")["source"] == "variable"
    client.close()

    async def twin() -> None:
        aclient = AsyncBrokerClient.from_url(redis_url)
        change = await aclient.subscribe("news", ["TSLA"], start_from=["*"])
        assert (change.started_from, change.size) == (("*",), 2)
        assert (await aclient.subscriptions("news"))["symbols"] == ["*", "TSLA"]
        assert (await aclient.unsubscribe("news", ["*"])).size == 1
        assert await aclient.reset_subscriptions("news") == 1
        await aclient.close()

    asyncio.run(twin())
    assert announced(changes) == ["options", "options", "options", "news", "news", "news"]
    assert redis_client.smembers(KEYS.universe("news")) == set()
