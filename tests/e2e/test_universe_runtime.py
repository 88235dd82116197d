"""A universe that changes at run time, end to end: ``alpaca-broker subscribe``/``unsubscribe``
as an operator runs them, a real producer process on its open connection to the simulator,
a real worker, Redis.

Each test checks the connection was never replaced: the simulator's count of data
connections and the producer's ``reconnects`` stay as they were.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from alpaca_broker.keys import Keys
from simulator import messages as m
from simulator.api import Simulator
from tests.harness.pipeline import Pipeline
from tests.harness.producer import ProducerProcess
from tests.harness.proxy import TcpProxy
from tests.harness.wait import wait_until
from tests.harness.workers import REPO, process_env

KEYS = Keys()
ENV = {"ALPACA_SYMBOLS": "SPY", "ALPACA_DATA_CHANNELS": "trades,quotes"}


@pytest.fixture
def sim(request: pytest.FixtureRequest) -> Iterator[Simulator]:
    """A scripted simulator; ``indirect`` parameters are its options (``symbol_limit``)."""
    with Simulator(**getattr(request, "param", {})) as simulator:
        yield simulator


def command(redis_url: str, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``alpaca-broker ARGV...`` as an operator runs it, on the test's Redis."""
    return subprocess.run(
        [sys.executable, "-m", "alpaca_broker", *argv],
        env=process_env(redis_url, **env),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stderr
    return done.stdout


def subscribed(sim: Simulator, channel: str = "trades") -> set[str]:
    """What the simulator's one data session holds on ``channel``."""
    rows = sim.subscriptions("iex")
    return set(rows[0].get(channel, [])) if len(rows) == 1 else set()


def data_connections(sim: Simulator) -> int:
    return int(sim.stats()["connections"].get("data", 0))


def trade(symbol: str, trade_id: int) -> dict[str, Any]:
    return m.trade(symbol, time.time_ns(), trade_id=trade_id, price=100.0, size=1)


class Channels:
    """Every price event published, from before anything is sent."""

    def __init__(self, client: redis.Redis) -> None:
        self.pubsub = client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.psubscribe(KEYS.prices_pattern)
        wait_until(lambda: self.pubsub.get_message(timeout=0.05) is None, 5)
        self.events: list[dict[str, Any]] = []

    def symbols(self) -> list[str]:
        while (msg := self.pubsub.get_message(timeout=0.01)) is not None:
            self.events.append(json.loads(msg["data"]))
        return [e["symbol"] for e in self.events]


def universe_view(producer: ProducerProcess) -> dict[str, Any]:
    view: dict[str, Any] = producer.health().get("streams", {}).get("prices", {})
    return view.get("subscriptions") or {}


def settled(producer: ProducerProcess, desired: int) -> bool:
    """The producer's connection has the whole universe confirmed, nothing in flight."""
    view = universe_view(producer)
    return (
        view.get("desired") == desired
        and view.get("confirmed") == desired
        and view.get("pending") == 0
    )


@pytest.fixture
def running(pipeline: Pipeline, sim: Simulator) -> ProducerProcess:
    """A price worker and a price producer subscribed to SPY."""
    pipeline.worker(queues="prices")
    producer = pipeline.producer(streams="prices", **ENV)
    producer.wait_connected("prices")
    wait_until(lambda: subscribed(sim) == {"SPY"}, 10, message="SPY subscribed")
    return producer


def test_two_symbols_subscribed_at_run_time_flow_within_2s_and_an_unsubscribed_one_stops(
    sim: Simulator, redis_url: str, redis_client: redis.Redis, running: ProducerProcess
) -> None:
    channels = Channels(redis_client)
    connections = data_connections(sim)

    started = time.monotonic()
    line = ok(command(redis_url, "subscribe", "prices", "NVDA", "amd"))
    changed = time.monotonic()
    assert line.count("\n") == 1
    assert line.startswith("prices: subscribed NVDA AMD (2 added); universe 3 symbols")
    assert "started from ALPACA_SYMBOLS=SPY" in line

    def both_arrived() -> bool:
        sim.push_market([trade("NVDA", 1), trade("AMD", 2)])
        return {"NVDA", "AMD"} <= set(channels.symbols())

    wait_until(both_arrived, 5, interval=0.05, message="NVDA and AMD events")
    took = time.monotonic() - changed
    assert took < 2, f"events {took:.2f}s after the change ({changed - started:.2f}s command)"
    assert subscribed(sim, "quotes") == {"SPY", "NVDA", "AMD"}

    assert ok(command(redis_url, "unsubscribe", "prices", "AMD")).startswith(
        "prices: unsubscribed AMD (1 removed); universe 2 symbols"
    )
    wait_until(lambda: subscribed(sim) == {"SPY", "NVDA"}, 2, message="AMD unsubscribed")
    before = len(channels.symbols())

    def nvda_again() -> bool:
        sim.push_market([trade("AMD", 3), trade("NVDA", 4)])
        return "NVDA" in channels.symbols()[before:]

    wait_until(nvda_again, 5, interval=0.05, message="NVDA still flows")
    assert "AMD" not in channels.symbols()[before:]
    wait_until(lambda: settled(running, 2), 5, message="health: 2 of 2 confirmed")
    assert data_connections(sim) == connections
    assert running.health()["streams"]["prices"]["reconnects"] == 0

    report = ok(command(redis_url, "subscriptions", "prices"))
    assert "prices: 2 symbols, from alpaca:universe:prices" in report
    assert "  NVDA SPY" in report
    assert "Alpaca confirmed 2 of 2 (trades 2, quotes 2)" in report


@pytest.mark.slow
def test_12000_symbols_in_one_command_go_in_messages_of_at_most_1000_without_a_reconnect(
    sim: Simulator, pipeline: Pipeline, redis_url: str, tmp_path: Path
) -> None:
    producer = pipeline.producer(streams="prices", **ENV)
    producer.wait_connected("prices")
    wait_until(lambda: subscribed(sim) == {"SPY"}, 10)
    connections = data_connections(sim)
    symbols = [
        f"Z{chr(65 + i // 676)}{chr(65 + i // 26 % 26)}{chr(65 + i % 26)}" for i in range(12_000)
    ]
    listing = tmp_path / "universe.txt"
    listing.write_text("\n".join(symbols) + "\n")

    changed = time.monotonic()
    line = ok(command(redis_url, "subscribe", "prices", "--file", str(listing)))
    assert line.startswith(f"prices: subscribed 12000 symbols (ZAAA ZAAB ZAAC ... {symbols[-1]})")
    wait_until(lambda: settled(producer, 12_001), 20, message="12,001 confirmed")
    took = time.monotonic() - changed
    stats = sim.stats()
    assert 0 < stats["largest_subscription_message"] <= 1000
    assert stats["subscription_messages"]["subscribe"] >= 1 + 24  # 12,000 x 2 channels / 1,000
    assert len(subscribed(sim)) == len(subscribed(sim, "quotes")) == 12_001
    assert data_connections(sim) == connections
    assert producer.health()["streams"]["prices"]["reconnects"] == 0
    received = producer.health()["streams"]["prices"]["received"]
    wait_until(
        lambda: (
            sim.push_market([trade(symbols[-1], 1)]) == 1
            and producer.health()["streams"]["prices"]["received"] > received
        ),
        5,
        message="the last symbol's trade reaches the producer",
    )
    print(f"12,000 symbols confirmed {took:.2f}s after the change")


def test_a_restarted_producer_subscribes_to_the_universe_changed_while_it_was_down(
    sim: Simulator, pipeline: Pipeline, redis_url: str
) -> None:
    first = pipeline.producer(streams="prices", **ENV)
    first.wait_connected("prices")
    wait_until(lambda: subscribed(sim) == {"SPY"}, 10)
    ok(command(redis_url, "subscribe", "prices", "NVDA"))
    wait_until(lambda: subscribed(sim) == {"SPY", "NVDA"}, 2, message="NVDA on the first")
    assert first.stop() == 0
    ok(command(redis_url, "unsubscribe", "prices", "SPY"))  # while no producer runs

    second = pipeline.producer(streams="prices", **ENV)  # ALPACA_SYMBOLS=SPY still
    second.wait_connected("prices")
    wait_until(lambda: subscribed(sim) == {"NVDA"}, 10, message="the current universe")
    wait_until(lambda: settled(second, 1), 5)
    assert universe_view(second)["source"] == "set"

    assert ok(command(redis_url, "subscriptions", "prices", "--reset")).startswith(
        "prices: reset to ALPACA_SYMBOLS"
    )
    wait_until(lambda: subscribed(sim) == {"SPY"}, 2, message="back to the variable")
    assert second.health()["streams"]["prices"]["reconnects"] == 0


def test_a_standby_taking_over_subscribes_to_the_current_universe(
    sim: Simulator, pipeline: Pipeline, redis_url: str, redis_client: redis.Redis
) -> None:
    lease = {"PRODUCER_LEASE": "universe", "LEASE_TTL": "3", **ENV}
    producers = {
        name: pipeline.producer(streams="prices", PRODUCER_NAME=name, **lease)
        for name in ("a", "b")
    }

    def holder() -> ProducerProcess | None:
        raw = redis_client.get(KEYS.lease("universe"))
        return producers[json.loads(raw)["holder"]] if raw else None

    active = wait_until(holder, 20, message="a lease holder")
    active.wait_connected("prices")
    ok(command(redis_url, "subscribe", "prices", "NVDA", "AMD"))
    ok(command(redis_url, "unsubscribe", "prices", "SPY"))
    wait_until(lambda: subscribed(sim) == {"NVDA", "AMD"}, 3, message="on the holder")
    standby = next(p for p in producers.values() if p is not active)

    assert active.stop() == 0
    standby.wait_connected("prices", timeout=10)
    wait_until(lambda: subscribed(sim) == {"NVDA", "AMD"}, 5, message="on the new holder")
    wait_until(lambda: settled(standby, 2), 5)


@pytest.mark.parametrize("sim", [{"symbol_limit": 3}], indirect=True)
def test_a_405_leaves_the_stream_connected_its_symbols_flowing_and_health_names_it(
    sim: Simulator, redis_url: str, redis_client: redis.Redis, running: ProducerProcess
) -> None:
    channels = Channels(redis_client)
    connections = data_connections(sim)
    ok(command(redis_url, "subscribe", "prices", "AAPL"))
    wait_until(lambda: settled(running, 2), 3, message="AAPL confirmed")

    ok(command(redis_url, "subscribe", "prices", "NVDA", "AMD"))  # 4 symbols: over the limit
    wait_until(
        lambda: universe_view(running).get("refusals"), 3, message="the refusal in the health key"
    )
    (refused,) = universe_view(running)["refusals"]
    assert (refused["code"], refused["msg"]) == (405, "symbol limit exceeded")
    assert refused["sample"] == ["AMD", "NVDA"]
    assert subscribed(sim) == {"SPY", "AAPL"}

    def spy_and_aapl_flow() -> bool:
        sim.push_market([trade("SPY", 1), trade("AAPL", 2)])
        return {"SPY", "AAPL"} <= set(channels.symbols())

    wait_until(spy_and_aapl_flow, 5, interval=0.05, message="the earlier symbols flow")
    assert running.stream_state("prices") == "connected"
    assert data_connections(sim) == connections
    assert running.health()["streams"]["prices"]["reconnects"] == 0

    health = command(redis_url, "health", "--json", "--timeout", "0.2")
    assert health.returncode == 1
    problems = json.loads(health.stdout)["problems"]
    named = [p for p in problems if "405 symbol limit exceeded" in p]
    assert named == [
        "producer 'default': stream prices: Alpaca refused subscribe of 2 symbol(s) "
        "(AMD, NVDA): 405 symbol limit exceeded"
    ]
    report = ok(command(redis_url, "subscriptions", "prices"))
    assert (
        "Alpaca refused subscribe of 2 symbol(s) (AMD, NVDA): 405 symbol limit exceeded" in report
    )
    assert "missing 2: AMD NVDA" in report

    ok(command(redis_url, "unsubscribe", "prices", "AAPL", "AMD"))  # room for NVDA: asked again
    wait_until(lambda: subscribed(sim) == {"SPY", "NVDA"}, 3, message="NVDA after the room")
    wait_until(lambda: settled(running, 2) and not universe_view(running)["refusals"], 3)


def test_a_symbol_added_at_run_time_gets_its_bar_history_as_on_a_first_start(
    sim: Simulator, pipeline: Pipeline, redis_url: str, redis_client: redis.Redis
) -> None:
    pipeline.worker(queues="prices")
    env = {"ALPACA_SYMBOLS": "SPY", "ALPACA_DATA_CHANNELS": "trades,bars"}
    producer = pipeline.producer(streams="prices", BAR_BACKFILL_MINUTES="5", **env)
    producer.wait_connected("prices")
    wait_until(lambda: redis_client.zcard(KEYS.bars("SPY")) >= 5, 15, message="SPY's start")

    ok(command(redis_url, "subscribe", "prices", "NVDA"))
    wait_until(lambda: redis_client.zcard(KEYS.bars("NVDA")) >= 5, 15, message="NVDA's bars")
    bars = [json.loads(raw) for raw in redis_client.zrange(KEYS.bars("NVDA"), 0, -1)]
    assert {bar["source"] for bar in bars} == {"backfill"}
    assert len(bars) <= 6  # BAR_BACKFILL_MINUTES, and a minute that ended meanwhile
    assert any("NVDA" in r.params.get("symbols", "") for r in sim.bars_requests())
    assert subscribed(sim, "bars") == {"SPY", "NVDA"}


def test_a_change_made_while_the_producer_was_cut_off_from_redis_is_applied_once_it_is_back(
    sim: Simulator, redis_url: str, pipeline_on: Callable[[str], Pipeline]
) -> None:
    target = redis.connection.parse_url(redis_url)
    with TcpProxy((target["host"], target["port"])) as proxy:
        producer = pipeline_on(proxy.url()).producer(streams="prices", **ENV)
        producer.wait_connected("prices")
        wait_until(lambda: subscribed(sim) == {"SPY"}, 10)
        proxy.cut()  # the producer alone loses Redis; its Alpaca socket stays up
        wait_until(lambda: "universe: cannot watch" in producer.log(), 10, message="it noticed")
        ok(command(redis_url, "subscribe", "prices", "NVDA"))  # its PUBLISH reaches nobody
        assert subscribed(sim) == {"SPY"}
        proxy.restore()
        restored = time.monotonic()
        wait_until(lambda: subscribed(sim) == {"SPY", "NVDA"}, 10, message="read on return")
        took = time.monotonic() - restored
        assert took < 4, f"applied {took:.2f}s after Redis was back (the 30 s resync?)"
        assert producer.health()["streams"]["prices"]["reconnects"] == 0
