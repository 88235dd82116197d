"""Wire encoding: data-stream frames (msgpack or JSON), control messages, client messages.

Pure functions only; the sessions decide what to send and when.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any

import msgpack

from simulator.clock import rfc3339

#: Every documented market data stream error: code -> exact ``msg`` text.
ERRORS: Mapping[int, str] = {
    400: "invalid syntax",
    401: "not authenticated",
    402: "auth failed",
    403: "already authenticated",
    404: "auth timeout",
    405: "symbol limit exceeded",
    406: "connection limit exceeded",
    407: "slow client",
    408: "v2 not enabled",
    409: "insufficient subscription",
    410: "invalid subscribe action for this feed",
    411: "insufficient scope",
    412: "option messages are only available in MsgPack format",
    413: "star subscription is not allowed for option quotes",
    500: "internal error",
}

Frame = bytes | str
Message = dict[str, Any]


class WireFormat(StrEnum):
    """How a connection's frames are encoded."""

    MSGPACK = "msgpack"  # binary frames (data stream with Content-Type: application/msgpack)
    JSON = "json"  # text frames
    JSON_BINARY = "json-binary"  # JSON in binary frames (the paper trading stream)

    @classmethod
    def for_content_type(cls, content_type: str | None, default: WireFormat) -> WireFormat:
        """The format a client asked for with its upgrade ``Content-Type`` header."""
        value = (content_type or "").split(";")[0].strip().lower()
        if value == "application/msgpack":
            return cls.MSGPACK
        if value == "application/json":
            return cls.JSON
        return default


class ClientMessageError(ValueError):
    """A client message that does not follow the protocol (answered with 400)."""


def success(text: str) -> Message:
    """A data-stream ``success`` control message (``connected``, ``authenticated``)."""
    return {"T": "success", "msg": text}


def error(code: int) -> Message:
    """A data-stream ``error`` control message with the documented text for ``code``."""
    return {"T": "error", "code": code, "msg": ERRORS[code]}


def _json_default(value: Any) -> Any:
    if isinstance(value, msgpack.Timestamp):
        return rfc3339(value.to_unix_nano())
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def encode(messages: Sequence[Any] | Mapping[str, Any], fmt: WireFormat) -> Frame:
    """Encode one frame: an array of messages (data stream) or one object (trading stream).

    msgpack keeps ``Timestamp`` values as the ext type; JSON renders them as RFC 3339.
    """
    if fmt is WireFormat.MSGPACK:
        packed: bytes = msgpack.packb(messages)
        return packed
    text = json.dumps(messages, default=_json_default, separators=(",", ":"))
    return text if fmt is WireFormat.JSON else text.encode()


def decode_client(payload: Frame) -> dict[str, Any]:
    """Decode a client message (a msgpack map in a binary frame, JSON in a text frame).

    Raises ClientMessageError when it is not a map with a string ``action``.
    """
    try:
        # A msgpack map never starts with "{" (0x7b is a positive fixint), so JSON sent in a
        # binary frame is told apart from msgpack by its first byte.
        if isinstance(payload, str) or payload[:1] == b"{":
            value = json.loads(payload)
        else:
            value = msgpack.unpackb(payload)
    except (ValueError, msgpack.UnpackException) as exc:
        raise ClientMessageError(f"undecodable client message: {exc}") from None
    if not isinstance(value, dict) or not isinstance(value.get("action"), str):
        raise ClientMessageError("client message is not a map with an action")
    return value


def decode_frame(payload: Frame) -> list[Any]:
    """Decode a data-stream frame (msgpack bytes or JSON text) to its list of messages."""
    value = json.loads(payload) if isinstance(payload, str) else msgpack.unpackb(payload)
    return value if isinstance(value, list) else [value]
