"""``alpaca-broker tail prices [SYMBOL]`` / ``tail orders`` / ``tail news``: print live events.

Prices come from their pub/sub channels (``tail prices BTC/USD`` for one crypto pair, an OCC
contract for an option); orders and news from their durable streams, so ``--from-start``
replays them and nothing is missed while the command runs.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import TextIO

import redis

from alpaca_broker.errors import ConfigError
from alpaca_broker.failover import RETRYABLE_REDIS, failover_attempts
from alpaca_broker.keys import Keys
from alpaca_broker.redis_client import connect, require
from alpaca_broker.redis_server import unreachable
from alpaca_broker.settings import exit_on_config_error, load_settings


def tail_prices(
    client: redis.Redis,
    keys: Keys,
    symbol: str | None,
    out: TextIO,
    limit: int,
    follow: bool = False,
) -> None:
    """Print every price event of ``symbol`` (or all symbols) as one JSON line.

    ``follow`` (Sentinel): a lost connection (a failover) subscribes again, on whatever
    primary the Sentinels name; the messages published meanwhile are gone (pub/sub).
    """
    printed = 0
    for attempt in failover_attempts(follow):
        try:
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            if symbol:
                pubsub.subscribe(keys.prices(symbol.upper()))
            else:
                pubsub.psubscribe(keys.prices_pattern)
            for message in pubsub.listen():
                attempt.reset()
                print(message["data"], file=out, flush=True)
                printed += 1
                if printed == limit:
                    return
        except RETRYABLE_REDIS as exc:
            attempt.failed(exc)


def tail_stream(
    client: redis.Redis,
    stream: str,
    from_start: bool,
    out: TextIO,
    limit: int,
    follow: bool = False,
) -> None:
    """Print the events of a durable stream (new ones, or all with ``from_start``).

    ``follow`` (Sentinel): a lost connection reads on from the last entry printed, on
    whatever primary the Sentinels name, so nothing is skipped or printed twice.
    """
    last = "0-0" if from_start else "$"
    started = f"{time.time_ns() // 1_000_000}-0"  # "$" once the connection is gone
    printed = 0
    for attempt in failover_attempts(follow):
        try:
            while True:
                for _stream, entries in client.xread({stream: last}, block=1000) or []:
                    attempt.reset()
                    for entry_id, fields in entries:
                        print(fields["event"], file=out, flush=True)
                        last = entry_id
                        printed += 1
                        if printed == limit:
                            return
        except RETRYABLE_REDIS as exc:
            if last == "$":  # nothing read yet: on from when the tail started
                last = started
            attempt.failed(exc)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``alpaca-broker tail``."""
    parser = argparse.ArgumentParser(prog="alpaca-broker tail", description=__doc__)
    parser.add_argument("path", choices=["prices", "orders", "news"], help="which events")
    parser.add_argument("symbol", nargs="?", help="prices: one symbol (default: all)")
    parser.add_argument(
        "--from-start", action="store_true", help="orders, news: replay the stream first"
    )
    parser.add_argument("-n", "--count", type=int, default=0, help="stop after N events")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        exit_on_config_error(exc)
    require("tail", settings)
    client = connect(settings, decode_responses=True)
    keys = Keys(settings.redis_key_prefix)
    follow = bool(settings.redis_sentinels)  # a failover is waited out, not an exit
    try:
        if args.path == "prices":
            tail_prices(client, keys, args.symbol, sys.stdout, args.count, follow)
        else:
            stream = keys.orders_events if args.path == "orders" else keys.news_events
            tail_stream(client, stream, args.from_start, sys.stdout, args.count, follow)
    except KeyboardInterrupt:
        pass
    except (redis.ConnectionError, redis.TimeoutError) as exc:  # Redis went away meanwhile
        unreachable("tail", settings.redis_url, exc)
    return 0
