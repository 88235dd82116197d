"""A market-data stream's universe, changed at run time: what the commands, the consumer
client and the producer share.

``P:universe:{STREAM}`` (a set) is the universe of ``STREAM`` (``prices``, ``crypto``,
``options``, ``news``) once a command has changed it; before that (and after ``subscriptions
STREAM --reset``) the stream's symbols variable is. The first change starts the set from that
variable: as the running producer published it in ``P:meta:universe:{STREAM}`` (field
``variable``), else as the caller's own settings say. Every change is one transaction that
ends with a PUBLISH of the stream's name on ``P:universe:changes``: the producer's watcher
(``producers.universe``) wakes on it and applies the change on its open connection.

Symbols are checked per stream before they reach Redis (:func:`normalize`): stock symbols,
``BASE/QUOTE`` crypto pairs, OCC option contracts; ``*`` (every symbol) on any stream.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import redis
import redis.asyncio as aioredis

from alpaca_broker.keys import Keys

Action = Literal["subscribe", "unsubscribe"]
STREAMS: tuple[str, ...] = ("prices", "crypto", "options", "news")
"""The market-data streams whose universe changes at run time (``--streams`` names)."""

VARIABLES: Mapping[str, str] = {
    "prices": "ALPACA_SYMBOLS",
    "crypto": "ALPACA_CRYPTO_SYMBOLS",
    "options": "ALPACA_OPTION_SYMBOLS",
    "news": "ALPACA_NEWS_SYMBOLS",
}
"""Each stream's symbols variable: its universe until a command changes it."""

ALL = "*"
_STOCK = re.compile(r"^[A-Z][A-Z0-9.\-]{0,11}$")
_PAIR = re.compile(r"^[A-Z0-9]{1,15}/[A-Z0-9]{1,15}$")
_OCC = re.compile(r"^[A-Z][A-Z0-9]{0,5}\d{6}[CP]\d{8}$")
PATTERNS: Mapping[str, re.Pattern[str]] = {
    "prices": _STOCK,
    "crypto": _PAIR,
    "options": _OCC,
    "news": _STOCK,
}
WHAT: Mapping[str, str] = {
    "prices": "a stock symbol (letters, digits, '.' or '-', starting with a letter, e.g. "
    "AAPL, BRK.B)",
    "crypto": "a BASE/QUOTE pair (e.g. BTC/USD)",
    "options": "an OCC option contract (root, YYMMDD, C or P, strike x 1000 in 8 digits, "
    "e.g. AAPL261218C00150000)",
    "news": "a symbol (e.g. AAPL)",
}
ADD_CHUNK = 10_000
"""Members per SADD/SREM in a change (a universe of any size, in bounded commands)."""


class BadSymbol(ValueError):
    """A symbol that is not of its stream's form (the commands exit 2 on it)."""


class UnknownStream(ValueError):
    """A stream name that is not one of :data:`STREAMS`."""


def check_stream(stream: str) -> str:
    """``stream``, when it is a market-data stream with a universe; else UnknownStream."""
    if stream not in STREAMS:
        raise UnknownStream(f"unknown stream {stream!r}: one of {', '.join(STREAMS)}")
    return stream


def is_valid(stream: str, symbol: str) -> bool:
    """Whether ``symbol`` (as Alpaca spells it: upper case) is of ``stream``'s form (pure)."""
    return symbol == ALL or bool(PATTERNS[stream].match(symbol))


def normalize(stream: str, symbols: Iterable[str]) -> list[str]:
    """``symbols`` upper-cased, stripped and deduplicated in order; BadSymbol names the first
    that is not of ``stream``'s form, UnknownStream a bad stream (pure)."""
    check_stream(stream)
    out: dict[str, None] = {}
    for raw in symbols:
        symbol = raw.strip().upper()
        if not is_valid(stream, symbol):
            raise BadSymbol(f"{raw!r} is not {WHAT[stream]} (or '*')")
        out[symbol] = None
    if not out:
        raise BadSymbol("give at least one symbol")
    return list(out)


def variable_symbols(settings: Any, stream: str) -> tuple[str, ...]:
    """The symbols variable of ``stream`` in ``settings`` (a :class:`Settings`)."""
    values: dict[str, tuple[str, ...]] = {
        "prices": settings.alpaca_symbols,
        "crypto": settings.alpaca_crypto_symbols,
        "options": settings.alpaca_option_symbols,
        "news": settings.alpaca_news_symbols,
    }
    return tuple(values[check_stream(stream)])


# --- what Redis holds, and a change planned against it (pure) ----------------------------


@dataclass(frozen=True)
class Held:
    """What Redis holds of one stream's universe."""

    in_force: bool
    """Whether the set is the universe (a command changed it, and no --reset since)."""
    members: frozenset[str]
    published: tuple[str, ...] | None
    """The symbols variable as the active producer published it (None: no producer yet)."""
    since: float | None = None
    updated_at: float | None = None


def held_from(members: Iterable[Any], meta: Mapping[Any, Any]) -> Held:
    """:class:`Held` from ``SMEMBERS`` and ``HGETALL`` of the meta hash (bytes or text). The
    set is in force once a command marked it (``since``) or when it exists with members
    (a set written by hand with ``SADD`` counts too)."""
    text = {_text(k): _text(v) for k, v in meta.items()}
    names = frozenset(_text(m) for m in members)
    published = None
    if "variable" in text:
        try:
            published = tuple(str(s) for s in json.loads(text["variable"]))
        except (ValueError, TypeError):
            published = None
    in_force = "since" in text or bool(names)
    return Held(
        in_force=in_force,
        members=names,
        published=published,
        since=_float(text.get("since")),
        updated_at=_float(text.get("updated_at")),
    )


@dataclass(frozen=True)
class Change:
    """One command's change of a stream's universe, as applied."""

    stream: str
    action: Action
    asked: tuple[str, ...]
    changed: tuple[str, ...]
    """The symbols that joined (subscribe) or left (unsubscribe) the universe."""
    size: int
    """Symbols in the universe after the change."""
    started_from: tuple[str, ...] | None
    """The variable's symbols the set started from, on the first change (else None)."""


def plan(
    held: Held, stream: str, action: Action, symbols: Sequence[str], fallback: Sequence[str]
) -> Change:
    """The change ``action`` of ``symbols`` makes to what Redis holds (pure): the set starts
    from the published variable (else ``fallback``) when it is not in force yet."""
    started = None
    base = held.members
    if not held.in_force:
        started = tuple(held.published if held.published is not None else fallback)
        base = frozenset(started)
    if action == "subscribe":
        changed = tuple(s for s in symbols if s not in base)
        size = len(base | set(symbols))
    else:
        changed = tuple(s for s in symbols if s in base)
        size = len(base - set(symbols))
    return Change(stream, action, tuple(symbols), changed, size, started)


def describe(change: Change, keys: Keys) -> str:
    """The one line a command prints for ``change`` (pure)."""
    verb = "subscribed" if change.action == "subscribe" else "unsubscribed"
    joined = "added" if change.action == "subscribe" else "removed"
    line = f"{change.stream}: {verb} {_some(change.asked)}"
    if len(change.changed) == len(change.asked):
        line += f" ({len(change.changed)} {joined})"
    elif not change.changed:
        where = "already in" if change.action == "subscribe" else "not in"
        line += f" ({where} the universe: nothing changed)"
    else:
        left = len(change.asked) - len(change.changed)
        where = "already in" if change.action == "subscribe" else "not in"
        line += f" ({len(change.changed)} {joined}, {left} {where} the universe)"
    plural = "s" * (change.size != 1)
    line += f"; universe {change.size} symbol{plural} in {keys.universe(change.stream)}"
    if change.started_from is not None:
        variable = VARIABLES[change.stream]
        line += f", started from {variable}={','.join(change.started_from) or '(empty)'}"
    return line


def _some(symbols: Sequence[str], shown: int = 10) -> str:
    if len(symbols) <= shown:
        return " ".join(symbols)
    return f"{len(symbols)} symbols ({' '.join(symbols[:3])} ... {symbols[-1]})"


# --- applying changes ------------------------------------------------------------------


def _queue_change(pipe: Any, keys: Keys, change: Change, now: float) -> None:
    """Queue the writes of ``change`` on a MULTI pipeline (sync or asyncio alike)."""
    key, meta = keys.universe(change.stream), keys.universe_meta(change.stream)
    if change.started_from is not None:
        pipe.delete(key)
        for at in range(0, len(change.started_from), ADD_CHUNK):
            pipe.sadd(key, *change.started_from[at : at + ADD_CHUNK])
        pipe.hset(meta, "since", repr(now))
    write = pipe.sadd if change.action == "subscribe" else pipe.srem
    for at in range(0, len(change.asked), ADD_CHUNK):
        write(key, *change.asked[at : at + ADD_CHUNK])
    pipe.hset(meta, "updated_at", repr(now))
    pipe.publish(keys.universe_changes, change.stream)


def apply_change(
    client: redis.Redis,
    keys: Keys,
    stream: str,
    action: Action,
    symbols: Sequence[str],
    fallback: Sequence[str],
) -> Change:
    """Add (subscribe) or remove (unsubscribe) ``symbols`` in ``stream``'s universe, in one
    transaction (WATCH, retried when another change came first), and wake the producer.
    ``symbols`` must be :func:`normalize`d; ``fallback`` is the caller's symbols variable."""
    key, meta = keys.universe(stream), keys.universe_meta(stream)
    with client.pipeline() as pipe:
        while True:
            try:
                pipe.watch(key, meta)
                held = held_from(pipe.smembers(key), pipe.hgetall(meta))
                change = plan(held, stream, action, symbols, fallback)
                pipe.multi()
                _queue_change(pipe, keys, change, time.time())
                pipe.execute()
                return change
            except redis.WatchError:
                continue


async def apply_change_async(
    client: aioredis.Redis,
    keys: Keys,
    stream: str,
    action: Action,
    symbols: Sequence[str],
    fallback: Sequence[str],
) -> Change:
    """:func:`apply_change` with ``redis.asyncio``."""
    key, meta = keys.universe(stream), keys.universe_meta(stream)
    async with client.pipeline() as pipe:
        while True:
            try:
                await pipe.watch(key, meta)
                held = held_from(await pipe.smembers(key), await pipe.hgetall(meta))
                change = plan(held, stream, action, symbols, fallback)
                pipe.multi()
                _queue_change(pipe, keys, change, time.time())
                await pipe.execute()
                return change
            except redis.WatchError:
                continue


def reset(client: redis.Redis, keys: Keys, stream: str) -> int:
    """Return ``stream`` to its symbols variable: the set and its mark go (the variable the
    producer published stays), and the producer is woken. Returns the set's size before."""
    key, meta = keys.universe(check_stream(stream)), keys.universe_meta(stream)
    pipe = client.pipeline()
    pipe.scard(key)
    pipe.delete(key)
    pipe.hdel(meta, "since", "updated_at")
    pipe.publish(keys.universe_changes, stream)
    size, *_ = pipe.execute()
    return int(size)


async def reset_async(client: aioredis.Redis, keys: Keys, stream: str) -> int:
    """:func:`reset` with ``redis.asyncio``."""
    key, meta = keys.universe(check_stream(stream)), keys.universe_meta(stream)
    pipe = client.pipeline()
    pipe.scard(key)
    pipe.delete(key)
    pipe.hdel(meta, "since", "updated_at")
    pipe.publish(keys.universe_changes, stream)
    size, *_ = await pipe.execute()
    return int(size)


def read(client: redis.Redis, keys: Keys, stream: str) -> Held:
    """What Redis holds of ``stream``'s universe (one transaction)."""
    pipe = client.pipeline()
    pipe.smembers(keys.universe(check_stream(stream)))
    pipe.hgetall(keys.universe_meta(stream))
    members, meta = pipe.execute()
    return held_from(members, meta)


async def read_async(client: aioredis.Redis, keys: Keys, stream: str) -> Held:
    """:func:`read` with ``redis.asyncio``."""
    pipe = client.pipeline()
    pipe.smembers(keys.universe(check_stream(stream)))
    pipe.hgetall(keys.universe_meta(stream))
    members, meta = await pipe.execute()
    return held_from(members, meta)


@dataclass(frozen=True)
class Universe:
    """A stream's universe as it stands: its symbols and where they come from."""

    stream: str
    symbols: tuple[str, ...]
    """Sorted; ``*`` means every symbol."""
    source: Literal["set", "variable"]
    held: Held


def current(held: Held, stream: str, fallback: Sequence[str]) -> Universe:
    """The universe ``held`` makes (pure): the set when in force, else the variable (the
    published one, else ``fallback``)."""
    if held.in_force:
        return Universe(stream, tuple(sorted(held.members)), "set", held)
    variable = held.published if held.published is not None else tuple(fallback)
    return Universe(stream, tuple(sorted(set(variable))), "variable", held)


def confirmed_views(producers: Mapping[str, Any], stream: str) -> dict[str, dict[str, Any]]:
    """Producer name -> the ``subscriptions`` its heartbeat shows for ``stream`` (pure):
    what Alpaca confirmed on its connection, the messages in flight and the refusals.
    Standbys (which hold no connection) are left out."""
    views: dict[str, dict[str, Any]] = {}
    for name, doc in sorted(producers.items()):
        if doc.get("role") == "standby":
            continue
        state = (doc.get("streams") or {}).get(stream)
        if isinstance(state, dict) and isinstance(state.get("subscriptions"), dict):
            views[name] = {"state": state.get("state"), **state["subscriptions"]}
    return views


def refusal_line(refusal: Mapping[str, Any]) -> str:
    """A refusal as one phrase (pure): Alpaca's code and message, what it refused."""
    code = refusal.get("code")
    what = f"{refusal.get('action')} of {refusal.get('symbols')} symbol(s)"
    sample = refusal.get("sample") or []
    if sample:
        more = "..." if (refusal.get("symbols") or 0) > len(sample) else ""
        what += f" ({', '.join(sample)}{more})"
    label = f"{code} {refusal.get('msg')}" if code is not None else str(refusal.get("msg"))
    return f"Alpaca refused {what}: {label}"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


# --- what the commands and the client report ---------------------------------------------


def report(universe: Universe, producers: Mapping[str, Any], keys: Keys) -> dict[str, Any]:
    """A stream's universe and what each active producer's connection has of it (pure):
    the ``subscriptions`` command's JSON, and the client's ``subscriptions()``."""
    held = universe.held
    return {
        "stream": universe.stream,
        "source": universe.source,
        "key": keys.universe(universe.stream),
        "variable": VARIABLES[universe.stream],
        "size": len(universe.symbols),
        "symbols": list(universe.symbols),
        "since": held.since if universe.source == "set" else None,
        "updated_at": held.updated_at if universe.source == "set" else None,
        "producers": confirmed_views(producers, universe.stream),
    }


def render(doc: Mapping[str, Any], *, shown: int | None = 50) -> list[str]:
    """The ``subscriptions`` command's lines for one stream's :func:`report` (pure):
    the universe and where it comes from, then per producer what Alpaca confirmed, what is
    missing, and every refusal with Alpaca's code and message."""
    stream, size = doc["stream"], doc["size"]
    plural = "s" * (size != 1)
    if doc["source"] == "set":
        since = _stamp(doc.get("updated_at"))
        where = f"from {doc['key']} (last changed {since}; --reset returns to {doc['variable']})"
    else:
        where = f"from {doc['variable']} (no command has changed it)"
    lines = [f"{stream}: {size} symbol{plural}, {where}"]
    symbols = list(doc["symbols"])
    if symbols:
        if shown is not None and len(symbols) > shown:
            rest = len(symbols) - shown
            lines.append(f"  {' '.join(symbols[:shown])} ... and {rest} more (--all lists them)")
        else:
            lines.append(f"  {' '.join(symbols)}")
    producers = doc.get("producers") or {}
    if not producers:
        lines.append("  no active producer runs this stream (nothing confirmed by Alpaca)")
    for name, view in producers.items():
        lines += _render_view(name, view)
    return lines


def _render_view(name: str, view: Mapping[str, Any]) -> list[str]:
    state = view.get("state")
    if "channels" not in view:
        return [f"  producer {name}: {state}, no connection to Alpaca now"]
    channels = ", ".join(f"{ch} {n}" for ch, n in (view.get("channels") or {}).items())
    line = (
        f"  producer {name}: {state}; Alpaca confirmed {view.get('confirmed')} of "
        f"{view.get('desired')} ({channels})"
    )
    if view.get("pending"):
        line += f"; {view['pending']} message(s) awaiting Alpaca's reply"
    lines = [line]
    for label, key in (("missing", "missing"), ("not in the universe", "unwanted")):
        count = view.get(key) or 0
        if count:
            sample = " ".join(view.get(f"{key}_sample") or [])
            more = " ..." if count > len(view.get(f"{key}_sample") or []) else ""
            lines.append(f"  producer {name}: {label} {count}: {sample}{more}")
    if view.get("invalid"):
        lines.append(f"  producer {name}: skipped, not symbols: {' '.join(view['invalid'])}")
    for refused in view.get("refusals") or []:
        lines.append(f"  producer {name}: {refusal_line(refused)} at {_stamp(refused.get('at'))}")
    return lines


def _stamp(epoch: Any) -> str:
    if not isinstance(epoch, int | float):
        return "?"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def producer_docs(client: redis.Redis, keys: Keys) -> dict[str, Any]:
    """Every live producer heartbeat (``P:health:producer:*``), by name."""
    prefix = keys.producer_health("")
    names = [_text(k) for k in client.scan_iter(match=keys.producer_health_pattern, count=100)]
    raws = client.mget(names) if names else []
    return {n[len(prefix) :]: json.loads(r) for n, r in zip(names, raws, strict=True) if r}


async def producer_docs_async(client: aioredis.Redis, keys: Keys) -> dict[str, Any]:
    """:func:`producer_docs` with ``redis.asyncio``."""
    prefix = keys.producer_health("")
    names = [
        _text(k) async for k in client.scan_iter(match=keys.producer_health_pattern, count=100)
    ]
    raws = await client.mget(names) if names else []
    return {n[len(prefix) :]: json.loads(r) for n, r in zip(names, raws, strict=True) if r}


def own_variable(stream: str) -> tuple[str, ...]:
    """``stream``'s symbols variable in this process's settings (environment, ``.env``);
    empty when they cannot be loaded. What the first change starts the set from when no
    producer has published its own."""
    from alpaca_broker.errors import ConfigError
    from alpaca_broker.settings import load_settings

    try:
        return variable_symbols(load_settings(), stream)
    except ConfigError:
        return ()
