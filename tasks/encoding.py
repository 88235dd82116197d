"""Events as compact UTF-8 JSON, the one wire form of every published event."""

from __future__ import annotations

import json
from typing import Any, Final

from alpaca_broker.errors import MalformedMessage

# One encoder for the process: json.dumps with options would build a new one per call.
_ENCODER: Final = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def encode_event(event: dict[str, Any]) -> bytes:
    """``event`` as compact JSON in UTF-8, keys in insertion order.

    Raises MalformedMessage when a value has no JSON form (NaN, infinity, bytes, surrogates).
    """
    try:
        return _ENCODER.encode(event).encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:
        raise MalformedMessage("unencodable", str(exc), event) from None


def hash_value(value: Any) -> str:
    """A field value for a Redis hash: strings as they are, ``null`` as ``""``, else JSON."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    try:
        return _ENCODER.encode(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise MalformedMessage("unencodable", str(exc), value) from None
