"""Bar histories trimmed to BAR_HISTORY_DAYS in bounded steps, against a real Redis.

Issue 26, item 8: a write trims at most a few hundred members of the histories it touches,
and the active producer sweeps every history of its kind (idle ones included) in script calls
of at most 500 members, so lowering BAR_HISTORY_DAYS under a long history never holds Redis
for long, and a symbol nobody writes to is trimmed all the same."""

from __future__ import annotations

import threading
import time

import redis

from alpaca_broker.keys import Keys
from alpaca_broker.settings import Settings
from producers.backfill import DAY_MS, MINUTE_MS, HistoryTrimmer
from producers.streams import STREAMS, build_stream
from tasks.bar_history import BarHistory
from tasks.price_events import prepare_price
from tests.harness.wait import wait_until
from tests.tasks.payloads import bar

KEYS = Keys()
SLOW_SCRIPT_US = 25_000
"""A command this long (25 ms) holds Redis too long; each bounded step takes about 1 ms."""


def now_minute() -> int:
    """The start of the current minute, epoch ms."""
    return time.time_ns() // 60_000_000_000 * MINUTE_MS


def fill(client: redis.Redis, symbol: str, minutes: range) -> None:
    """A history of one member per minute of ``minutes`` (epoch ms), with its meta hash."""
    step = 10_000
    for at in range(0, len(minutes), step):
        part = minutes[at : at + step]
        pipe = client.pipeline(transaction=False)
        pipe.zadd(KEYS.bars(symbol), {f'{{"m":{m}}}': m for m in part})
        pipe.hset(KEYS.bars_meta(symbol), mapping={str(m): 1 for m in part})
        pipe.execute()


def trimmer(redis_url: str, kind: str, history_days: float) -> HistoryTrimmer:
    """The producer's trimmer of ``kind`` (``prices``, ``crypto``), as build_stream makes it."""
    settings = Settings(REDIS_URL=redis_url, BAR_HISTORY_DAYS=str(history_days), _env_file=None)
    stream = build_stream(STREAMS[kind], settings, lambda batch: None)
    unit = stream.units[f"{kind}.trim"]()
    assert isinstance(unit, HistoryTrimmer)
    return unit


def slow_commands(client: redis.Redis) -> list[tuple[int, str]]:
    """(microseconds, command) of every command SLOWLOG kept since its reset (those beyond
    SLOW_SCRIPT_US: a script call, or a command a script called)."""
    found = []
    for entry in client.slowlog_get(1000):
        command = entry["command"]
        text = command.decode(errors="replace") if isinstance(command, bytes) else str(command)
        found.append((int(entry["duration"]), text[:60]))
    return found


def test_lowering_bar_history_days_under_a_long_history_never_holds_redis_for_long(
    redis_client: redis.Redis, redis_url: str
) -> None:
    # 200,000 minutes of history (about 139 days); BAR_HISTORY_DAYS lowered to 1.
    now = now_minute()
    fill(redis_client, "SPY", range(now - 200_000 * MINUTE_MS, now, MINUTE_MS))
    redis_client.config_set("slowlog-log-slower-than", SLOW_SCRIPT_US)
    redis_client.slowlog_reset()
    try:
        # A worker writes the next bar: its script trims a little, not the whole history.
        history = BarHistory(redis_client, KEYS, history_days=1)
        event = prepare_price(bar("SPY", now * 1_000_000, 1.0), time.time_ns())
        assert history.add([event]) == 1
        assert slow_commands(redis_client) == []
        assert redis_client.zcard(KEYS.bars("SPY")) > 190_000
        # The producer's sweep removes the rest in bounded steps.
        removed = trimmer(redis_url, "prices", 1).sweep()
        assert slow_commands(redis_client) == []
    finally:
        redis_client.config_set("slowlog-log-slower-than", 10_000)
    cutoff = now - DAY_MS
    scores = [int(s) for _, s in redis_client.zrange(KEYS.bars("SPY"), 0, -1, withscores=True)]
    assert min(scores) >= cutoff - MINUTE_MS  # the clock moved on a little meanwhile
    assert 1439 <= len(scores) <= 1441  # a day, and the new bar
    assert removed + len(scores) == 200_001 - 200  # the write's own trim took 200
    assert redis_client.hlen(KEYS.bars_meta("SPY")) == len(scores)


def test_an_idle_symbols_history_is_trimmed_by_the_producers_periodic_sweep(
    redis_client: redis.Redis, redis_url: str
) -> None:
    now = now_minute()
    old = range(now - 9 * DAY_MS, now - 8 * DAY_MS, MINUTE_MS)  # a day, 8 days ago
    recent = range(now - 10 * MINUTE_MS, now, MINUTE_MS)
    for symbol in ("SPY", "BTC/USD"):
        fill(redis_client, symbol, old)
        fill(redis_client, symbol, recent)
    # Nothing writes to either symbol: the stock trimmer alone, as a running unit.
    unit = trimmer(redis_url, "prices", 7)
    thread = threading.Thread(target=unit.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: redis_client.zcard(KEYS.bars("SPY")) == len(recent), 10)
    finally:
        unit.stop()
        thread.join(10)
    assert redis_client.hlen(KEYS.bars_meta("SPY")) == len(recent)
    assert unit.state.stats.trimmed == len(old)
    # A crypto pair's history is the crypto stream's to trim.
    assert redis_client.zcard(KEYS.bars("BTC/USD")) == len(old) + len(recent)
    assert trimmer(redis_url, "crypto", 7).sweep() == len(old)
    assert redis_client.zcard(KEYS.bars("BTC/USD")) == len(recent)
