"""Market data frames -> messages, as a pure function (tested with captured and fuzzed input)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack

CONTROL_TYPES = frozenset({"success", "subscription", "error"})


@dataclass(slots=True)
class ParsedFrame:
    """A frame's well-formed market messages, its control messages, and what was skipped."""

    market: list[dict[str, Any]] = field(default_factory=list)
    control: list[dict[str, Any]] = field(default_factory=list)
    malformed: list[tuple[str, object]] = field(default_factory=list)


def parse_frame(frame: bytes | str, required_keys: Mapping[str, frozenset[str]]) -> ParsedFrame:
    """Split one data-stream frame (msgpack, or JSON text) into its messages.

    A market message needs a ``T`` of ``required_keys`` and every key listed for it (checked here,
    cheaply, so that one bad message is skipped and counted while the rest of its frame
    flows). Never raises: bad input ends up in ``malformed`` as (reason, context).
    """
    parsed = ParsedFrame()
    try:
        decoded = msgpack.unpackb(frame) if isinstance(frame, bytes) else json.loads(frame)
    except Exception:  # msgpack raises several unrelated types for garbage (and RecursionError)
        parsed.malformed.append(("undecodable frame", frame[:64]))
        return parsed
    if not isinstance(decoded, list):
        parsed.malformed.append(("frame is not an array", decoded))
        return parsed
    for msg in decoded:
        kind = msg.get("T") if isinstance(msg, dict) else None
        if not isinstance(kind, str):
            parsed.malformed.append(("no T" if kind is None else "unknown type", msg))
            continue
        required = required_keys.get(kind)
        if required is not None:
            if required <= msg.keys():
                parsed.market.append(msg)
            else:
                parsed.malformed.append(("missing fields", msg))
        elif kind in CONTROL_TYPES:
            parsed.control.append(msg)
        else:
            parsed.malformed.append(("unknown type", msg))
    return parsed
