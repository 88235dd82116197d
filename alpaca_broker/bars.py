"""``alpaca-broker bars SYMBOL [--since ...]``: print a symbol's minute-bar history from Redis."""

from __future__ import annotations

import argparse
import re
import sys
import time
from typing import TextIO

import redis

from alpaca_broker.errors import ConfigError
from alpaca_broker.keys import Keys
from alpaca_broker.redaction import masked_url
from alpaca_broker.redis_client import connect
from alpaca_broker.settings import exit_on_config_error, load_settings
from alpaca_broker.timestamps import parse_rfc3339

_UNITS = {"m": 60_000, "h": 3_600_000, "d": 86_400_000}
_RELATIVE = re.compile(r"^(\d+)([mhd])$")


def since_ms(text: str | None, now_ms: int) -> int | None:
    """``--since``: ``30m``/``2h``/``1d`` back from ``now_ms``, or an RFC 3339 time (pure).

    Raises ValueError on anything else.
    """
    if not text:
        return None
    relative = _RELATIVE.match(text)
    if relative:
        return now_ms - int(relative.group(1)) * _UNITS[relative.group(2)]
    return parse_rfc3339(text) // 1_000_000


def without_password(url: str) -> str:
    """``url`` with any password replaced by ``***`` (pure; the one masking everywhere)."""
    return masked_url(url)


def print_bars(client: redis.Redis, keys: Keys, symbol: str, since: int | None, out: TextIO) -> int:
    """Print the history of ``symbol`` from ``since`` (epoch ms), oldest first; returns lines."""
    low = "-inf" if since is None else since
    members = client.zrangebyscore(keys.bars(symbol), low, "+inf")
    for member in members:
        print(member, file=out)
    return len(members)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``alpaca-broker bars``."""
    parser = argparse.ArgumentParser(prog="alpaca-broker bars", description=__doc__)
    parser.add_argument("symbol", help="the symbol, e.g. AAPL or BTC/USD")
    parser.add_argument("--since", help="30m, 2h, 1d, or an RFC 3339 time (default: all)")
    args = parser.parse_args(argv)
    try:
        since = since_ms(args.since, time.time_ns() // 1_000_000)
    except ValueError as exc:
        print(f"alpaca-broker bars: bad --since: {exc}", file=sys.stderr)
        return 2
    try:
        settings = load_settings()
    except ConfigError as exc:
        exit_on_config_error(exc)
    client = connect(settings, decode_responses=True, socket_timeout=5)
    try:
        print_bars(client, Keys(settings.redis_key_prefix), args.symbol.upper(), since, sys.stdout)
    except redis.ConnectionError as exc:
        url = without_password(settings.redis_url)
        print(f"alpaca-broker bars: Redis unreachable at {url} ({exc})", file=sys.stderr)
        return 1
    finally:
        client.close()
    return 0
