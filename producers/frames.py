"""Market data frames -> messages, as a pure function (tested with captured and fuzzed input)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

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


class Frame(NamedTuple):
    """A data-stream frame handed to the workers as it came off the socket (per-frame hand-off).

    ``data`` is the frame's msgpack bytes, ``messages`` how many market messages it holds (what
    the buffer, the drop counter and the batch size count).
    """

    data: bytes
    messages: int


def clean_count(frame: bytes, required_keys: Mapping[str, frozenset[str]]) -> int:
    """How many messages ``frame`` holds when every one is a well-formed market message.

    Returns -1 otherwise (control messages, malformed input, not msgpack): the caller then
    takes the slow path, :func:`parse_frame`. The fast path checks each message and builds
    nothing: the frame's bytes themselves are handed off (the workers decode them again, in
    parallel), so the read loop does no per-message allocation beyond msgpack's own decode.
    """
    try:
        decoded = msgpack.unpackb(frame)
        if type(decoded) is not list:
            return -1
        for msg in decoded:
            required = required_keys.get(msg["T"]) if type(msg) is dict and "T" in msg else None
            if required is None or not required <= msg.keys():
                return -1
    except Exception:  # garbage, an unhashable T: the slow path counts and reports it
        return -1
    return len(decoded)
