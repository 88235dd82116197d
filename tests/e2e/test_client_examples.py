"""The consumer examples (examples/) against a running pipeline: simulator -> producer ->
worker -> Redis -> alpaca_broker.client."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import redis

from alpaca_broker.client import BrokerClient, Gap
from alpaca_broker.keys import PRICES_BATCH_TASK, PRICES_QUEUE, Keys
from alpaca_broker.settings import Settings
from celery_app import create_app
from simulator.api import Simulator
from tests.harness.faults import wait_orders_settled
from tests.harness.pipeline import Pipeline
from tests.harness.wait import wait_until
from tests.harness.workers import WorkerProcess
from tests.tasks.payloads import bar

KEYS = Keys()
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"examples.{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _drops(client: redis.Redis) -> int:
    return int(client.info("stats")["client_output_buffer_limit_disconnections"])


def test_slow_market_consumer_dropped_by_redis_resubscribes_and_reports_the_gap(
    sim: Simulator, own_client: redis.Redis, own_pipeline: Pipeline
) -> None:
    own_client.config_set("client-output-buffer-limit", "pubsub 256kb 128kb 2")
    own_pipeline.worker(queues=PRICES_QUEUE)
    sim.set_market_rate(2000)
    sim.set_market(True)
    producer = own_pipeline.producer(
        streams="prices", ALPACA_SYMBOLS="*", ALPACA_DATA_CHANNELS="trades,quotes"
    )
    producer.wait_connected("prices")
    events: list[Any] = []
    gaps: list[Gap] = []

    def on_event(event: Any) -> None:
        events.append(event)
        if len(events) == 1:  # a consumer stuck in its handler: Redis must drop it
            wait_until(lambda: _drops(own_client) >= 1, 60, interval=0.2, message="dropped")

    events_before_gap: list[int] = []

    def done() -> bool:
        return bool(gaps) and len(events) >= events_before_gap[0] + 100

    def on_gap(gap: Gap) -> None:
        gaps.append(gap)
        events_before_gap.append(len(events))

    client = BrokerClient.from_url(own_pipeline.url)
    example("market_events").follow(client, None, on_event, on_gap, done)
    assert len(gaps) == 1
    assert gaps[0].resumed_at >= gaps[0].lost_at
    assert len(events) >= events_before_gap[0] + 100  # flowing again after the gap
    assert all(e["symbol"] for e in events)
    client.close()


def test_order_consumer_restarted_mid_stream_sees_every_event_once(
    sim: Simulator, redis_client: redis.Redis, tmp_path: Path, pipeline: Pipeline
) -> None:
    pipeline.worker(queues="orders")
    producer = pipeline.producer(streams="orders", RECONCILE_INTERVAL="3600")
    producer.wait_connected("orders")
    consumer = example("order_consumer")
    checkpoint = tmp_path / "orders.checkpoint"
    handled: list[tuple[str, str]] = []

    def handle(entry_id: str, event: Any) -> None:
        handled.append((entry_id, json.dumps(event, sort_keys=True)))

    sim.set_order_flow(20)
    first = BrokerClient.from_url(pipeline.url)
    consumer.consume(first, checkpoint, handle, lambda: len(handled) >= 5)
    first.close()  # the consumer stops mid-stream; orders keep flowing
    wait_until(lambda: redis_client.xlen(KEYS.orders_events) >= 20, 30, message="more orders")
    sim.set_order_flow(0)
    wait_orders_settled(sim, 30)
    wait_until(
        lambda: redis_client.xlen(KEYS.orders_events) >= len(sim.orders.events()),
        30,
        message="every emitted event published",
    )
    total = redis_client.xlen(KEYS.orders_events)
    second = BrokerClient.from_url(pipeline.url)
    consumer.consume(second, checkpoint, handle, lambda: len(handled) >= total)
    second.close()
    stream = [(i, json.dumps(json.loads(f["event"]), sort_keys=True))
              for i, f in redis_client.xrange(KEYS.orders_events)]  # fmt: skip
    assert handled == stream  # every event, in order, exactly once across the restart
    assert checkpoint.read_text() == stream[-1][0]


def test_bar_window_is_complete_after_the_worker_published_it(
    redis_url: str, worker_factory: Callable[..., WorkerProcess]
) -> None:
    worker_factory(redis_url, queues=PRICES_QUEUE)
    end = datetime.now(UTC).replace(second=0, microsecond=0)
    minutes = 30
    starts = [end - timedelta(minutes=m) for m in range(minutes, 0, -1)]
    now_ns = int(end.timestamp() * 1e9)
    items = [
        [now_ns, bar("SPY", int(s.timestamp() * 1e9), 100.0 + i)] for i, s in enumerate(starts)
    ]
    # one minute revised by an updated bar, one bar delivered twice: still one bar a minute
    items.append([now_ns + 1, bar("SPY", int(starts[3].timestamp() * 1e9), 555.0, code="u")])
    items.append(items[7])
    sender = create_app(Settings(REDIS_URL=redis_url, _env_file=None))
    half = len(items) // 2
    sender.send_task(PRICES_BATCH_TASK, args=[items[:half]])
    sender.send_task(PRICES_BATCH_TASK, args=[items[half:]])
    bars_example = example("bar_window")
    client = BrokerClient.from_url(redis_url)

    def complete() -> list[Any] | None:
        bars = bars_example.window(client, "SPY", end, minutes)
        return bars if not bars_example.missing_minutes(bars, end, minutes) else None

    bars = wait_until(complete, 30, interval=0.1, message="every minute of the window")
    assert len(bars) == minutes
    assert [b["ts_ns"] for b in bars] == [int(s.timestamp() * 1e9) for s in starts]
    assert bars[3]["type"] == "updated_bar"
    assert bars[3]["close"] == 555.0
    assert client.bars("SPY", end, end + timedelta(minutes=5)) == []
    client.close()
