"""The ``alpaca-broker`` command: one sub-command per process, each with its own options."""

from __future__ import annotations

import sys
from importlib import import_module

COMMANDS: dict[str, tuple[str, str]] = {
    "producer": ("producers.main:main", "run the producer process (price and order streams)"),
    "simulate": ("simulator.cli:main", "run the local Alpaca simulator"),
    "bench": ("benchmarks.run:main", "measure end-to-end throughput and latency"),
    "demo": (
        "alpaca_broker.demo:main",
        "run the whole pipeline locally (simulator, Redis, workers, Flower)",
    ),
    "health": ("alpaca_broker.health:main", "report health; exit 0 when healthy, 1 when not"),
    "tail": (
        "alpaca_broker.tail:main",
        "print live events from Redis: tail prices [SYMBOL] | orders",
    ),
    "bars": ("alpaca_broker.bars:main", "print a symbol's minute bars: bars SYMBOL [--since 1h]"),
    "subscribe": (
        "alpaca_broker.subscriptions:subscribe_main",
        "add symbols to a stream's universe at run time: subscribe STREAM SYMBOL...",
    ),
    "unsubscribe": (
        "alpaca_broker.subscriptions:unsubscribe_main",
        "remove symbols from a stream's universe: unsubscribe STREAM SYMBOL...",
    ),
    "subscriptions": (
        "alpaca_broker.subscriptions:subscriptions_main",
        "print each stream's universe and what Alpaca confirmed: subscriptions [STREAM] [--reset]",
    ),
}


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    return "usage: alpaca-broker COMMAND [OPTIONS]\n\ncommands:\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch to the sub-command's own ``main(argv)``; returns its exit code."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(f"alpaca-broker: unknown command {command!r}\n{_usage()}", file=sys.stderr)
        return 2
    module, func = COMMANDS[command][0].split(":")
    entry = getattr(import_module(module), func)
    code: int = entry(rest)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
