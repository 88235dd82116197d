"""The Lua scripts in ``tasks/lua``, read once per process, with their SHA1 for EVALSHA."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib.resources import files
from typing import Final

_LIBRARY: Final = "compare.lua"


@dataclass(frozen=True, slots=True)
class LuaScript:
    """A script's full source (the shared library prepended) and the SHA1 Redis will use."""

    name: str
    source: str
    sha: str


def load_script(name: str) -> LuaScript:
    """Read ``tasks/lua/<name>`` with ``compare.lua`` prepended."""
    folder = files("tasks") / "lua"
    source = (folder / _LIBRARY).read_text("utf-8") + "\n" + (folder / name).read_text("utf-8")
    sha = hashlib.sha1(source.encode("utf-8"), usedforsecurity=False).hexdigest()
    return LuaScript(name=name, source=source, sha=sha)


PRICES: Final = load_script("prices.lua")
"""One price batch: compare-and-set of ``P:latest:{SYMBOL}`` fields by ``ts_ns`` (then
receive time), then a PUBLISH of every event."""

ORDER: Final = load_script("order.lua")
"""Exactly-once publication of one order event and its order-hash update."""
