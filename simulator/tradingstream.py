"""One trading stream connection (``/stream``): silent until the client authenticates,
then ``authorization``, ``listen``/``listening`` and ``trade_updates``.

Accepts both auth forms (``authenticate`` with ``key_id``/``secret_key`` or
``oauth_token``, and ``auth`` with ``key``/``secret``). Sends JSON in binary frames like
the paper endpoint (text frames if configured, msgpack if the client asks for it).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from simulator import codec
from simulator.codec import ClientMessageError, WireFormat
from simulator.hub import Hub
from simulator.outbound import Outbound

log = logging.getLogger(__name__)
STREAMS = frozenset({"trade_updates"})


def authorization(status: str, action: str, message: str | None = None) -> dict[str, Any]:
    """The ``authorization`` reply (``authorized`` / ``unauthorized``)."""
    data: dict[str, Any] = {"status": status, "action": action}
    if message is not None:
        data["message"] = message
    return {"stream": "authorization", "data": data}


class TradingSession:
    """The protocol state of one trading-stream connection."""

    stream = "trading"

    def __init__(self, ws: ServerConnection, hub: Hub) -> None:
        self.ws = ws
        self.hub = hub
        assert ws.request is not None
        default = WireFormat.JSON_BINARY if hub.config.trading_binary else WireFormat.JSON
        self.fmt = WireFormat.for_content_type(ws.request.headers.get("Content-Type"), default)
        if self.fmt is WireFormat.JSON and hub.config.trading_binary:
            self.fmt = WireFormat.JSON_BINARY
        self.outbound = Outbound(ws, hub.config.outbound_queue, self._overflow)
        self.authenticated = False
        self._streams: list[str] = []

    def listens(self, stream: str) -> bool:
        """Whether the client asked to listen to ``stream``."""
        return self.authenticated and stream in self._streams

    def send(self, message: dict[str, Any]) -> bool:
        """Queue one message."""
        return self.outbound.offer(codec.encode(message, self.fmt))

    async def run(self) -> None:
        """Serve the connection until it ends; nothing is sent before the client speaks."""
        self.hub.trading.add(self)
        self.hub.stats.connections["trading"] += 1
        self.outbound.start()
        try:
            with contextlib.suppress(ConnectionClosed):  # also when cut without a close frame
                async for payload in self.ws:
                    self._on_message(payload)
        finally:
            self.hub.trading.discard(self)
            await self.outbound.stop()

    def _on_message(self, payload: codec.Frame) -> None:
        try:
            message = codec.decode_client(payload)
        except ClientMessageError as exc:
            log.info("trading client sent a malformed message: %s", exc)
            self.send({"action": "error", "data": {"error_message": "invalid syntax"}})
            return
        action = message["action"]
        data = message.get("data") if isinstance(message.get("data"), dict) else {}
        assert isinstance(data, dict)
        if action == "authenticate":
            if "oauth_token" in data:
                ok = self.hub.config.credentials.key is None and isinstance(
                    data["oauth_token"], str
                )
                self._auth(ok)
            else:
                self._auth(
                    self.hub.config.credentials.accepts(data.get("key_id"), data.get("secret_key"))
                )
        elif action == "auth":
            self._auth(
                self.hub.config.credentials.accepts(message.get("key"), message.get("secret"))
            )
        elif action == "listen":
            if not self.authenticated:
                self.send(authorization("unauthorized", "listen"))
                return
            streams = data.get("streams")
            if not isinstance(streams, list):
                self.send({"action": "error", "data": {"error_message": "invalid syntax"}})
                return
            # The list replaces the previous one; unknown streams are left out of the ack.
            self._streams = [s for s in streams if s in STREAMS]
            self.send({"stream": "listening", "data": {"streams": list(self._streams)}})
        else:
            self.send({"action": "error", "data": {"error_message": "invalid syntax"}})

    def _auth(self, accepted: bool) -> None:
        stats = self.hub.stats
        stats.auth_attempts["trading"] += 1
        if self.hub.faults.take_auth_failure("trading"):
            accepted = False
        if not accepted:
            stats.auth_failures["trading"] += 1
            self.send(
                authorization("unauthorized", "authenticate", "access key verification failed")
            )
            return
        self.authenticated = True
        self.send(authorization("authorized", "authenticate"))

    def _overflow(self) -> None:
        log.warning("trading client is too slow; disconnecting it")
        self.hub.stats.slow_clients += 1
        self.outbound.finish(
            codec.encode({"action": "error", "data": {"error_message": "slow client"}}, self.fmt),
            1008,
            "slow client",
        )
