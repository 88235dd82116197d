"""Bar history against a real Redis: one member per minute, last receipt wins, trimming, source."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from alpaca_broker.keys import Keys
from tasks.bar_history import BarHistory, bar_updates, cutoff_ms
from tasks.price_events import PriceEvent, prepare_price
from tasks.price_frames import prepare_batch
from tasks.publisher import Publisher
from tests.tasks.payloads import bar

KEYS = Keys("alpaca")
MINUTE_NS = 60_000_000_000
NOW_NS = (time.time_ns() // MINUTE_NS) * MINUTE_NS
RECEIVED = NOW_NS + 5_000_000_000


@pytest.fixture
def publisher(redis_url: str) -> Iterator[Publisher]:
    client = redis.Redis.from_url(redis_url)
    yield Publisher(client, KEYS, stream_maxlen=1000, dedupe_ttl=60, bar_history_days=7)
    client.close()


def event(raw: dict[str, Any], received: int = RECEIVED, source: str = "stream") -> PriceEvent:
    return prepare_price(raw, received, source=source)


def history(client: redis.Redis, symbol: str) -> list[tuple[dict[str, Any], float]]:
    return [(json.loads(m), s) for m, s in client.zrange(KEYS.bars(symbol), 0, -1, withscores=True)]


def test_bar_updates_keep_the_last_received_per_minute() -> None:
    first = event(bar("SPY", NOW_NS, 1.0), RECEIVED)
    later = event(bar("SPY", NOW_NS, 2.0, "u"), RECEIVED + 1)
    tie = event(bar("SPY", NOW_NS, 3.0, "u"), RECEIVED + 1)
    trade = prepare_batch([[RECEIVED, {"T": "t", "S": "SPY", "p": 1, "s": 1, "t": NOW_NS}]])
    chosen = bar_updates([later, first, *trade.events, tie])
    assert [(u.minute_ms, u.json) for u in chosen] == [(NOW_NS // 1_000_000, tie.json)]
    assert cutoff_ms(10 * 86_400_000, 7) == 3 * 86_400_000


def test_updated_bar_replaces_its_minute(publisher: Publisher, redis_client: redis.Redis) -> None:
    publisher.publish_prices([event(bar("SPY", NOW_NS, 1.0))])
    publisher.publish_prices([event(bar("SPY", NOW_NS, 2.0, "u"), RECEIVED + 10)])
    publisher.publish_prices([event(bar("SPY", NOW_NS + MINUTE_NS, 3.0), RECEIVED + 20)])
    held = history(redis_client, "SPY")
    assert [(e["type"], e["close"], s) for e, s in held] == [
        ("updated_bar", 2.0, NOW_NS // 1_000_000),
        ("bar", 3.0, (NOW_NS + MINUTE_NS) // 1_000_000),
    ]
    meta = redis_client.hgetall(KEYS.bars_meta("SPY"))
    assert meta == {
        str(NOW_NS // 1_000_000): str(RECEIVED + 10),
        str((NOW_NS + MINUTE_NS) // 1_000_000): str(RECEIVED + 20),
    }
    # Only the histories sit under P:bars:* (the contract pattern): the meta hash is elsewhere.
    under = sorted(redis_client.scan_iter(match=KEYS.bars_pattern))
    assert under == [KEYS.bars("SPY")]
    assert redis_client.type(KEYS.bars("SPY")) == "zset"


def test_older_receipt_and_duplicate_change_nothing(
    publisher: Publisher, redis_client: redis.Redis
) -> None:
    newer = event(bar("SPY", NOW_NS, 2.0, "u"), RECEIVED + 10)
    publisher.publish_prices([newer])
    publisher.publish_prices([event(bar("SPY", NOW_NS, 1.0), RECEIVED)])  # older receipt
    publisher.publish_prices([newer])  # duplicate (a retried batch)
    assert [e["close"] for e, _ in history(redis_client, "SPY")] == [2.0]
    assert json.loads(redis_client.hget(KEYS.latest("SPY"), "updated_bar") or "{}")["close"] == 2.0


def test_racing_workers_leave_one_member_per_minute(
    redis_url: str, redis_client: redis.Redis
) -> None:
    minutes = 50
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def worker(offset: int) -> None:
        client = redis.Redis.from_url(redis_url)
        history_ = BarHistory(client, KEYS, history_days=7)
        try:
            barrier.wait(5)
            for i in range(minutes):
                ts = NOW_NS - i * MINUTE_NS
                history_.add([event(bar("SPY", ts, float(offset)), RECEIVED + offset)])
        except BaseException as exc:
            errors.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    held = history(redis_client, "SPY")
    assert len(held) == minutes
    assert {e["close"] for e, _ in held} == {2.0}  # the later receipt won every minute
    assert redis_client.hlen(KEYS.bars_meta("SPY")) == minutes


def test_history_older_than_the_window_is_trimmed(
    publisher: Publisher, redis_client: redis.Redis
) -> None:
    day = 86_400 * 1_000_000_000
    old = NOW_NS - 8 * day
    # Planted as if written 8 days ago (the script refuses to add bars already out of the window).
    BarHistory(publisher.client, KEYS, history_days=30).add([event(bar("SPY", old, 1.0), old)])
    assert len(history(redis_client, "SPY")) == 1
    publisher.publish_prices([event(bar("SPY", NOW_NS, 2.0))])
    assert [e["close"] for e, _ in history(redis_client, "SPY")] == [2.0]
    assert list(redis_client.hgetall(KEYS.bars_meta("SPY"))) == [str(NOW_NS // 1_000_000)]
    publisher.publish_prices([event(bar("SPY", old, 3.0), RECEIVED + 1)])  # too old to add
    assert len(history(redis_client, "SPY")) == 1


def test_item_source_becomes_the_event_source(
    publisher: Publisher, redis_client: redis.Redis
) -> None:
    batch = prepare_batch(
        [
            [RECEIVED, bar("SPY", NOW_NS, 1.0)],
            [RECEIVED, bar("SPY", NOW_NS - MINUTE_NS, 1.0), "backfill"],
            [RECEIVED, bar("SPY", NOW_NS, 1.0), "nonsense"],
            [RECEIVED],
        ]
    )
    assert [json.loads(e.json)["source"] for e in batch.events] == ["stream", "backfill"]
    assert len(batch.malformed) == 2
    publisher.publish_prices(batch.events)
    assert [e["source"] for e, _ in history(redis_client, "SPY")] == ["backfill", "stream"]
