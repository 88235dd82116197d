"""The consumer library against a real Redis (sync and asyncio); no pipeline processes."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import UTC, datetime
from typing import Any

import pytest
import redis

from alpaca_broker.aioclient import AsyncBrokerClient
from alpaca_broker.client import BrokerClient, Gap, StreamEntry, bar_range, to_ms
from alpaca_broker.keys import Keys
from tests.tasks.payloads import expected_events, stream_expected

KEYS = Keys()
TRADE = json.loads(expected_events()[1])


def _plain(item: object) -> dict[str, Any]:
    """A typed event as a plain mapping (a Gap fails the test)."""
    assert isinstance(item, dict), item
    return item


def _trade(n: int) -> str:
    return json.dumps({**TRADE, "ts_ns": TRADE["ts_ns"] + n, "trade_id": n})


def _publisher(url: str, symbol: str, stop: threading.Event) -> threading.Thread:
    """Publishes numbered trades on ``symbol``'s channel until ``stop`` is set."""

    def run() -> None:
        client = redis.Redis.from_url(url)
        n = 0
        while not stop.wait(0.01):
            n += 1
            client.publish(KEYS.prices(symbol), _trade(n))
        client.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_latest_returns_each_held_type_typed(redis_url, redis_client):
    redis_client.hset(KEYS.latest("AAPL"), mapping={"trade": _trade(1)})
    client = BrokerClient.from_url(redis_url)
    latest = client.latest("AAPL")
    assert list(latest) == ["trade"]
    assert _plain(latest["trade"])["trade_id"] == 1
    assert client.latest("NONE") == {}


def test_bar_window_is_half_open_and_takes_aware_datetimes_or_ms():
    start = datetime(2026, 1, 2, 14, 30, tzinfo=UTC)
    assert bar_range(start, to_ms(start) + 60_000) == (to_ms(start), f"({to_ms(start) + 60_000}")
    with pytest.raises(ValueError, match="naive"):
        to_ms(datetime(2026, 1, 2))


def test_market_events_resubscribe_after_client_kill_and_yield_a_gap(redis_url, redis_client):
    stop = threading.Event()
    _publisher(redis_url, "AAPL", stop)
    items = BrokerClient.from_url(redis_url).market_events(["AAPL"], poll=0.1)
    try:
        assert _plain(next(items))["type"] == "trade"
        redis_client.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        seen = []
        for item in items:
            seen.append(item)
            if isinstance(item, Gap):
                break
            assert len(seen) < 10_000, "no gap reported"
        after_gap = next(items)
        assert _plain(after_gap)["symbol"] == "AAPL"
    finally:
        stop.set()


def test_order_events_resume_after_the_last_id_seen(redis_url, redis_client):
    for n in range(5):
        redis_client.xadd(
            KEYS.orders_events, {"event": json.dumps({"type": "order_update", "n": n})}
        )
    client = BrokerClient.from_url(redis_url)
    first = client.order_events(block_ms=100)
    taken = [next(first) for _ in range(2)]
    assert all(isinstance(e, StreamEntry) for e in taken)
    rest = client.order_events(after=taken[-1].id, block_ms=100)
    later = [next(rest) for _ in range(3)]
    assert [_plain(e.event)["n"] for e in [*taken, *later]] == [0, 1, 2, 3, 4]


def test_news_from_an_id_and_only_new_with_dollar(redis_url, redis_client):
    line = stream_expected("news")[0].decode()
    first_id = redis_client.xadd(KEYS.news_events, {"event": line})
    client = BrokerClient.from_url(redis_url)
    assert next(client.news(block_ms=100)).id == first_id
    fresh = client.news(after="$", block_ms=100)
    second_id = redis_client.xadd(KEYS.news_events, {"event": line})
    assert next(fresh).id == second_id


def test_async_client_reads_latest_streams_and_reports_a_gap(redis_url, redis_client):
    redis_client.hset(KEYS.latest("AAPL"), mapping={"trade": _trade(1)})
    redis_client.xadd(KEYS.orders_events, {"event": json.dumps({"type": "order_update"})})

    async def scenario() -> list[object]:
        client = AsyncBrokerClient.from_url(redis_url)
        latest = await client.latest("AAPL")
        entry = await anext(client.order_events(block_ms=100))
        live = client.market_events(["AAPL"], poll=0.1)
        publisher = redis.asyncio.Redis.from_url(redis_url)

        async def publish() -> None:
            n = 0
            while True:
                n += 1
                await publisher.publish(KEYS.prices("AAPL"), _trade(n))
                await asyncio.sleep(0.01)

        task = asyncio.create_task(publish())
        try:
            first = await anext(live)
            await publisher.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
            gap = None
            for _ in range(10_000):
                item = await anext(live)
                if isinstance(item, Gap):
                    gap = item
                    break
            after = await anext(live)
        finally:
            task.cancel()
            await publisher.aclose()
            await client.close()
        trade_id = _plain(latest["trade"])["trade_id"]
        return [trade_id, entry.event["type"], _plain(first)["type"], gap, after]

    latest_id, kind, first, gap, after = asyncio.run(scenario())
    assert (latest_id, kind, first) == (1, "order_update", "trade")
    assert isinstance(gap, Gap)
    assert not isinstance(after, Gap)
