"""The crypto, option and news streams in the producer: each on its own connection, read
by the real alpaca-py clients from the simulator, counted and handed to Celery."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

from simulator.api import Simulator
from tests.harness.producer import TEST_KEY, TEST_SECRET, ProducerProcess
from tests.harness.wait import wait_until
from tests.harness.workers import REPO, process_env

OTHER = {
    "ALPACA_CRYPTO_SYMBOLS": "BTC/USD,ETH/USD",
    "ALPACA_CRYPTO_CHANNELS": "trades,quotes,bars,orderbooks",
    "ALPACA_OPTION_SYMBOLS": "AAPL261218C00150000",
    "ALPACA_NEWS_SYMBOLS": "*",
}


@pytest.fixture
def market() -> Iterator[Simulator]:
    with Simulator(synthetic=True, rate=400, seed=3) as simulator:
        yield simulator


@pytest.mark.slow
def test_crypto_options_and_news_streams_connect_and_hand_off_beside_stocks(
    market: Simulator, redis_url: str, producer_factory: Callable[..., ProducerProcess]
) -> None:
    producer = producer_factory(redis_url, market, streams="prices,crypto,options,news", **OTHER)
    producer.wait_connected("prices", "crypto", "options", "news", timeout=30)

    def flowing() -> bool:
        streams = producer.health()["streams"]
        return all(streams[s]["enqueued"] > 0 for s in ("prices", "crypto", "options", "news"))

    wait_until(flowing, 30, message=f"every stream hands off\n{producer.log()}")
    assert all(s["malformed"] == 0 for s in producer.health()["streams"].values())


def _start(redis_url: str, streams: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = process_env(redis_url, ALPACA_API_KEY=TEST_KEY, ALPACA_SECRET_KEY=TEST_SECRET)
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-m", "alpaca_broker", "producer", "--streams", streams],
        env=environ,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("streams", "env", "variable"),
    [
        ("options", {"ALPACA_OPTION_SYMBOLS": "*"}, "ALPACA_OPTION_SYMBOLS"),
        ("options", {}, "ALPACA_OPTION_SYMBOLS"),
        ("crypto", {}, "ALPACA_CRYPTO_SYMBOLS"),
        (
            "crypto",
            {"ALPACA_CRYPTO_SYMBOLS": "BTC/USD", "ALPACA_CRYPTO_CHANNELS": "lulds"},
            "ALPACA_CRYPTO_CHANNELS",
        ),
        (
            "options",
            {"ALPACA_OPTION_SYMBOLS": "X", "ALPACA_OPTION_CHANNELS": "bars"},
            "ALPACA_OPTION_CHANNELS",
        ),
    ],
)
def test_an_unusable_stream_setting_stops_the_producer_with_one_line(
    redis_url: str, streams: str, env: dict[str, str], variable: str
) -> None:
    result = _start(redis_url, streams, **env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert variable in lines[0]
