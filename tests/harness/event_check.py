"""Validate every event an end-to-end test sees against the shipped JSON Schemas.

:class:`EventWatcher` listens on every pattern a pipeline publishes on (prices, orders, news)
while a test runs and, when it stops, also reads what the test left in Redis (latest hashes,
bar histories, the order and news streams, order hashes). ``tests/e2e/conftest.py`` runs one
around every test that uses ``redis_url``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator
from typing import Any

import redis
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from alpaca_broker.event_schemas import load, load_all

PATTERNS = ("*:prices:*", "*:orders", "*:news")


def event_validator() -> Draft202012Validator:
    """A validator of ``event.json`` whose ``$ref``s resolve to the shipped schema files."""
    registry: Registry[Any] = Registry().with_resources(
        (uri, Resource.from_contents(schema)) for uri, schema in load_all().items()
    )
    return Draft202012Validator(load("event"), registry=registry)


def invalid_events(validator: Draft202012Validator, raws: Iterable[str]) -> list[str]:
    """One line per event of ``raws`` (JSON texts) that does not validate, with the reason."""
    problems = []
    for raw in raws:
        try:
            event = json.loads(raw)
        except ValueError as exc:
            problems.append(f"not JSON ({exc}): {raw[:200]}")
            continue
        for error in validator.iter_errors(event):
            where = "/".join(str(p) for p in error.absolute_path)
            problems.append(f"{event.get('type')} {where}: {error.message} in {raw[:200]}")
    return problems


def stored_events(client: redis.Redis) -> Iterator[str]:
    """Every event JSON the pipeline keeps in Redis (decode_responses client)."""
    for key in client.scan_iter(match="*:latest:*"):
        if ":meta:" not in key and client.type(key) == "hash":
            yield from client.hvals(key)
    for key in client.scan_iter(match="*:bars:*"):
        if ":meta:" not in key and client.type(key) == "zset":
            yield from client.zrange(key, 0, -1)
    for pattern in ("*:orders:events", "*:news:events"):
        for key in client.scan_iter(match=pattern):
            if client.type(key) == "stream":
                yield from (fields["event"] for _, fields in client.xrange(key))
    for key in client.scan_iter(match="*:order:*"):
        if client.type(key) == "hash" and (held := client.hget(key, "json")):
            yield held


class EventWatcher:
    """Collects every event published on a Redis while a test runs."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url, decode_responses=True)
        self.seen: list[str] = []
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.psubscribe(**dict.fromkeys(PATTERNS, self._on_message))
        self.thread = self.pubsub.run_in_thread(
            sleep_time=0.05, daemon=True, exception_handler=self._on_error
        )

    def _on_message(self, message: dict[str, Any]) -> None:
        self.seen.append(message["data"])

    @staticmethod
    def _on_error(exc: BaseException, pubsub: Any, thread: Any) -> None:
        thread.stop()  # Redis went away (a test stopped it): keep what was seen

    def stop(self) -> list[str]:
        """Stop listening; every event seen on the channels, then every one kept in Redis."""
        self.thread.stop()
        self.thread.join(timeout=5)
        events = list(self.seen)
        # When the test's Redis is gone, the channels' events are still checked.
        with contextlib.suppress(redis.RedisError):
            events += list(stored_events(self.client))
        self.pubsub.close()
        self.client.close()
        return events
