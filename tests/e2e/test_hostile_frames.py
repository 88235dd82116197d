"""Bad frames are counted, never fatal, on every stream: no thread dies, valid data flows."""

from __future__ import annotations

import msgpack
import pytest

from simulator.api import Simulator
from tests.harness.pipeline import Pipeline
from tests.harness.wait import wait_until

DEEP = 200_000  # far past Python's recursion limit
OTHER = {"ALPACA_CRYPTO_SYMBOLS": "BTC/USD", "ALPACA_NEWS_SYMBOLS": "*"}


@pytest.fixture
def sim(synthetic_sim: Simulator) -> Simulator:
    """A synthetic market, so that valid data flows around the bad frames."""
    return synthetic_sim


@pytest.mark.slow
def test_deeply_nested_and_garbage_frames_on_every_stream_are_counted_and_skipped(
    sim: Simulator, pipeline: Pipeline
) -> None:
    streams = ("prices", "orders", "crypto", "news")
    producer = pipeline.producer(streams=",".join(streams), **OTHER)
    producer.wait_connected(*streams, timeout=30)
    nested_json = "[" * DEEP + "]" * DEEP
    nested_msgpack = b"\x91" * DEEP + b"\x90"  # arrays in arrays: msgpack refuses the depth
    sim.push_raw(nested_json, stream="trading")
    sim.push_raw(b"\xc1 not json", stream="trading")
    for stream in ("data", "crypto", "news"):
        sim.push_raw(nested_msgpack, stream=stream)
        sim.push_raw(msgpack.packb([{"T": 1}]), stream=stream)

    def counted() -> bool:
        health = producer.health()["streams"]
        return all(health[s]["malformed"] >= 2 for s in streams)

    wait_until(counted, 20, message=f"every bad frame counted\n{producer.log()}")
    threads = producer.health()["threads"]
    assert all(t["restarts"] == 0 for t in threads.values()), threads
    before = producer.health()["streams"]["prices"]["received"]
    wait_until(lambda: producer.health()["streams"]["prices"]["received"] > before, 15)
    sim.orders.submit("AAPL", qty="1")
    wait_until(lambda: producer.health()["streams"]["orders"]["received"] >= 1, 15)
