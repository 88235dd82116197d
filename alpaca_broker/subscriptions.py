"""``alpaca-broker subscribe`` / ``unsubscribe`` / ``subscriptions``: a stream's universe at
run time (``alpaca_broker.universe``).

``subscribe STREAM SYMBOL...`` adds symbols to ``P:universe:{STREAM}``, ``unsubscribe``
removes them, each printing one line; the active producer applies the change on its open
connection within 2 seconds. ``subscriptions [STREAM]`` prints each stream's universe and
what Alpaca confirmed; ``--reset`` returns a stream to its symbols variable. Exit 2 on a bad
stream name or symbol, 1 (one line) when Redis is unreachable.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import redis

from alpaca_broker.errors import ConfigError
from alpaca_broker.keys import Keys
from alpaca_broker.redis_client import connect, describe, reason, require
from alpaca_broker.settings import Settings, exit_on_config_error, load_settings
from alpaca_broker.universe import (
    STREAMS,
    VARIABLES,
    Action,
    BadSymbol,
    UnknownStream,
    apply_change,
    check_stream,
    current,
    normalize,
    producer_docs,
    read,
    render,
    report,
    reset,
    variable_symbols,
)
from alpaca_broker.universe import describe as describe_change


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        exit_on_config_error(exc)


def _fail(command: str, text: str, code: int = 2) -> int:
    print(f"alpaca-broker {command}: {text}", file=sys.stderr, flush=True)
    return code


def _unreachable(command: str, settings: Settings, exc: BaseException) -> int:
    return _fail(command, f"cannot reach Redis at {describe(settings)}: {reason(exc)}", 1)


def _client(settings: Settings) -> redis.Redis:
    return connect(settings, decode_responses=True, socket_timeout=10, socket_connect_timeout=3)


def _symbols(args: argparse.Namespace) -> list[str]:
    """The SYMBOL arguments (commas split them too) and the lines of ``--file``."""
    raw = [part for arg in args.symbols for part in arg.split(",") if part.strip()]
    if args.file is not None:
        text = sys.stdin.read() if str(args.file) == "-" else Path(args.file).read_text()
        raw += [part for line in text.splitlines() for part in line.split(",") if part.strip()]
    return raw


def check_star(settings: Settings, stream: str, action: Action, symbols: Sequence[str]) -> None:
    """Alpaca refuses ``*`` for option quotes (413): refused here when this process's
    ALPACA_OPTION_CHANNELS has quotes, as the producer refuses it at start."""
    if (
        stream == "options"
        and action == "subscribe"
        and "*" in symbols
        and "quotes" in settings.alpaca_option_channels
    ):
        raise BadSymbol("'*' is allowed for option trades only (ALPACA_OPTION_CHANNELS has quotes)")


def change_main(action: Action, argv: list[str] | None) -> int:
    """``alpaca-broker subscribe|unsubscribe STREAM SYMBOL...``."""
    command = action
    verb = "adds symbols to" if action == "subscribe" else "removes symbols from"
    parser = argparse.ArgumentParser(
        prog=f"alpaca-broker {command}",
        description=f"{verb.capitalize()} a market-data stream's universe at run time "
        "(P:universe:STREAM); the active producer applies it on its open connection. "
        "Prints one line; exit 2 on a bad stream or symbol, 1 when Redis is unreachable.",
    )
    parser.add_argument("stream", help=f"one of {', '.join(STREAMS)}")
    parser.add_argument(
        "symbols",
        nargs="*",
        metavar="SYMBOL",
        help="symbols (commas also separate them): stock symbols, BASE/QUOTE pairs (crypto), "
        "OCC contracts (options); '*' for every symbol",
    )
    parser.add_argument(
        "--file", type=Path, help="also read symbols from FILE, one or more a line ('-': stdin)"
    )
    args = parser.parse_args(argv)
    try:
        stream = check_stream(args.stream)
        symbols = normalize(stream, _symbols(args))
    except (BadSymbol, UnknownStream, OSError) as exc:
        return _fail(command, str(exc))
    settings = _settings()
    try:
        check_star(settings, stream, action, symbols)
    except BadSymbol as exc:
        return _fail(command, str(exc))
    require(command, settings)
    keys = Keys(settings.redis_key_prefix)
    client = _client(settings)
    try:
        change = apply_change(
            client, keys, stream, action, symbols, variable_symbols(settings, stream)
        )
    except (redis.RedisError, OSError) as exc:
        return _unreachable(command, settings, exc)
    finally:
        client.close()
    print(describe_change(change, keys), flush=True)
    return 0


def subscribe_main(argv: list[str] | None = None) -> int:
    """Entry point of ``alpaca-broker subscribe``."""
    return change_main("subscribe", argv)


def unsubscribe_main(argv: list[str] | None = None) -> int:
    """Entry point of ``alpaca-broker unsubscribe``."""
    return change_main("unsubscribe", argv)


def subscriptions_main(argv: list[str] | None = None) -> int:
    """Entry point of ``alpaca-broker subscriptions``."""
    command = "subscriptions"
    parser = argparse.ArgumentParser(
        prog=f"alpaca-broker {command}",
        description="Print each market-data stream's universe (P:universe:STREAM, else its "
        "symbols variable) and what Alpaca confirmed on each active producer's connection, "
        "with every refusal (Alpaca's code and message).",
    )
    parser.add_argument("stream", nargs="?", help=f"one of {', '.join(STREAMS)} (default: all)")
    parser.add_argument(
        "--reset",
        action="store_true",
        help="return STREAM to its symbols variable (ALPACA_SYMBOLS, ...): the set is deleted",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--all", action="store_true", help="list every symbol (default: 50)")
    args = parser.parse_args(argv)
    try:
        streams = [check_stream(args.stream)] if args.stream else list(STREAMS)
    except UnknownStream as exc:
        return _fail(command, str(exc))
    if args.reset and not args.stream:
        return _fail(command, "--reset needs a STREAM (one of " + ", ".join(STREAMS) + ")")
    settings = _settings()
    require(command, settings)
    keys = Keys(settings.redis_key_prefix)
    client = _client(settings)
    try:
        if args.reset:
            stream = streams[0]
            size = reset(client, keys, stream)
            variable = variable_symbols(settings, stream)
            print(
                f"{stream}: reset to {VARIABLES[stream]} "
                f"({','.join(variable) or 'empty'} here, or as the producer has it); "
                f"{keys.universe(stream)} of {size} symbol(s) deleted",
                flush=True,
            )
            return 0
        producers = producer_docs(client, keys)
        docs = [
            report(
                current(read(client, keys, s), s, variable_symbols(settings, s)), producers, keys
            )
            for s in streams
        ]
    except (redis.RedisError, OSError) as exc:
        return _unreachable(command, settings, exc)
    finally:
        client.close()
    if args.json:
        print(json.dumps({doc["stream"]: doc for doc in docs}, indent=2, default=str))
    else:
        print(
            "\n".join(line for doc in docs for line in render(doc, shown=None if args.all else 50))
        )
    return 0
