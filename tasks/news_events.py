"""News articles -> contract ``news`` events, as pure functions of the raw map and receive time."""

from __future__ import annotations

from typing import Any, Final, NamedTuple

from alpaca_broker.errors import MalformedMessage
from alpaca_broker.logs import excerpt
from alpaca_broker.schema import NEWS_REQUIRED_KEYS
from alpaca_broker.timestamps import format_ns, format_received, to_ns
from tasks.encoding import encode_event
from tasks.price_events import MARKET_SOURCES

NEWS_TYPE = "news"
MAX_NEWS_EVENT_BYTES: Final = 1024 * 1024
"""Largest news event accepted, as the JSON it is published as. An article's ``content`` is
HTML, usually a few KB and rarely above 100 KB: an event beyond 1 MiB is malformed (counted,
logged, skipped like any bad input), never published."""

NEWS_FIELDS: tuple[tuple[str, str], ...] = (
    ("id", "id"),
    ("headline", "headline"),
    ("summary", "summary"),
    ("author", "author"),
    ("content", "content"),
    ("url", "url"),
    ("symbols", "symbols"),
    ("created_at", "created_at"),
    ("updated_at", "updated_at"),
    ("provider", "source"),
)
"""(event field, raw key) pairs after the common fields: the whole news event.

News is not market data, so unlike a price event it carries no ``asset_class`` or ``source``
(Alpaca's own ``source``, the article's provider, is ``provider``).
"""


class NewsEvent(NamedTuple):
    """A normalized article, encoded once, with what exactly-once publishing needs."""

    id: str
    """The article id as text: the dedupe key."""
    updated_at_ns: int
    """The version: a later ``updated_at`` of the same id is a distinct event."""
    json: bytes


def _time(raw: dict[str, Any], key: str) -> tuple[int, str]:
    """(ns, RFC 3339 text) of an article time: a string is kept as sent, else formatted."""
    value = raw[key]
    try:
        ns = to_ns(value)
        return ns, value if isinstance(value, str) else format_ns(ns)
    except ValueError as exc:
        raise MalformedMessage("bad timestamp", f"{key}: {exc}", raw) from None


def _check(raw: dict[str, Any]) -> str:
    """The article id as text, after the shape checks; raises MalformedMessage."""
    if raw.get("T") not in NEWS_REQUIRED_KEYS:
        raise MalformedMessage("unknown T", f"T={excerpt(raw.get('T'), 40)} (news)", raw)
    missing = [key for key in NEWS_REQUIRED_KEYS["n"] if raw.get(key) is None]
    if missing:
        raise MalformedMessage("missing keys", f"T=n lacks {sorted(missing)}", raw)
    article_id = raw["id"]
    if not (type(article_id) is int and article_id >= 0) and not (
        type(article_id) is str and article_id.isascii() and article_id.isalnum()
    ):
        raise MalformedMessage("bad id", f"id={excerpt(article_id, 40)}", raw)
    if type(raw["headline"]) is not str:
        raise MalformedMessage("bad headline", f"headline={excerpt(raw['headline'], 40)}", raw)
    symbols = raw.get("symbols")
    if symbols is not None and (
        not isinstance(symbols, list) or not all(type(s) is str for s in symbols)
    ):
        raise MalformedMessage("bad symbols", f"symbols={excerpt(symbols, 60)}", raw)
    return str(article_id)


def normalize_news(raw: Any, received_at_ns: Any, source: str = "stream") -> dict[str, Any]:
    """The contract ``news`` event of Alpaca article ``raw`` received at ``received_at_ns``.

    ``symbol`` is null; ``timestamp``/``ts_ns`` are ``updated_at``. ``created_at`` and
    ``updated_at`` may be RFC 3339 (kept as sent), int ns or msgpack Timestamps (formatted).
    Fields Alpaca did not send are null. ``source`` (``stream`` or ``backfill``, as the task
    message carries it) is checked but not emitted: the contract gives news events no
    ``source`` field. Raises MalformedMessage on anything else.
    """
    if not isinstance(raw, dict):
        raise MalformedMessage("not a map", f"got {type(raw).__name__}", raw)
    if not isinstance(source, str) or source not in MARKET_SOURCES:
        raise MalformedMessage("unknown source", f"source={excerpt(source, 40)}", raw)
    _check(raw)
    _, created_at = _time(raw, "created_at")
    updated_ns, updated_at = _time(raw, "updated_at")
    try:
        received_at = format_received(received_at_ns)
    except ValueError as exc:
        raise MalformedMessage("bad received_at", str(exc), raw) from None
    event: dict[str, Any] = {
        "type": NEWS_TYPE,
        "symbol": None,
        "timestamp": format_ns(updated_ns),
        "ts_ns": updated_ns,
        "received_at": received_at,
    }
    for name, key in NEWS_FIELDS:
        event[name] = raw.get(key)
    event["created_at"] = created_at
    event["updated_at"] = updated_at
    return event


def prepare_news(raw: Any, received_at_ns: Any, source: str = "stream") -> NewsEvent:
    """Normalize and encode one article; raises MalformedMessage (also for an event of more
    than MAX_NEWS_EVENT_BYTES)."""
    event = normalize_news(raw, received_at_ns, source)
    encoded = encode_event(event)
    if len(encoded) > MAX_NEWS_EVENT_BYTES:
        detail = f"{len(encoded)} bytes of JSON, more than {MAX_NEWS_EVENT_BYTES}"
        raise MalformedMessage("too large", detail, {"id": event["id"]})
    return NewsEvent(id=str(event["id"]), updated_at_ns=event["ts_ns"], json=encoded)
