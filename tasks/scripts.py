"""The Lua scripts in ``tasks/lua``, read once per process, registered per Redis client.

redis-py's ``register_script`` runs a script by EVALSHA and, on NOSCRIPT (a restarted or
flushed Redis), loads it and runs it again: nothing ran the first time, so it runs once.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Final

import redis
from redis.commands.core import Script

_LIBRARY: Final = "compare.lua"


def script_source(name: str) -> str:
    """``tasks/lua/<name>`` with the shared library ``compare.lua`` prepended."""
    folder = files("tasks") / "lua"
    return (folder / _LIBRARY).read_text("utf-8") + "\n" + (folder / name).read_text("utf-8")


PRICES_SOURCE: Final = script_source("prices.lua")
"""One price batch: compare-and-set of ``P:latest:{SYMBOL}`` fields by ``ts_ns`` (then
receive time), then a PUBLISH of every event."""

ORDER_SOURCE: Final = script_source("order.lua")
"""Exactly-once publication of one order event and its order-hash update."""


def register(client: redis.Redis, source: str) -> Script:
    """``source`` as a callable script of ``client`` (EVALSHA, loading it on NOSCRIPT)."""
    return client.register_script(source)
