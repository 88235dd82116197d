"""One market data stream connection: connected -> auth -> subscribe, then data.

Errors follow the documented codes: 400 malformed message, 401 subscribe before auth,
402 bad credentials, 403 second auth, 404 no auth in time, 405 symbol limit, 406 the
key already has a connection to this endpoint, 409 feed not in the subscription,
410 channel not on this stream, 407 slow client (then disconnect), 412 a JSON client on a
msgpack-only stream (options; then disconnect), 413 ``*`` on option quotes; after auth, 409
refuses a subscribe naming a symbol the plan does not cover (``--deny-symbol``). Every
subscribe and unsubscribe is answered by one message: the whole ``subscription`` set, or the
error that refused it (the set unchanged). The stream kind
(``simulator.kinds``) decides the channels; stocks, crypto, options and news share this class.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from simulator import codec
from simulator.codec import ClientMessageError, Message, WireFormat
from simulator.hub import Hub
from simulator.kinds import STOCKS, StreamKind
from simulator.outbound import Outbound
from simulator.subscriptions import SubscriptionError, Subscriptions

log = logging.getLogger(__name__)
SLOW_CLIENT_CLOSE = 1008


class DataSession:
    """The protocol state of one data-stream connection."""

    def __init__(
        self, ws: ServerConnection, feed: str, hub: Hub, kind: StreamKind = STOCKS
    ) -> None:
        self.ws = ws
        self.feed = feed
        self.hub = hub
        self.kind = kind
        #: The stream's name for faults and stats (``data``, ``crypto``, ``options``, ``news``).
        self.stream = kind.name
        config = hub.config
        assert ws.request is not None
        # alpaca-py asks for msgpack; a client that sends no Content-Type gets JSON text.
        self.fmt = WireFormat.for_content_type(
            ws.request.headers.get("Content-Type"), WireFormat.JSON
        )
        self.subs = Subscriptions(
            test_feed=feed == "test",
            symbol_limit=config.symbol_limit,
            kind=kind,
            denied=config.denied_symbols,
        )
        self.outbound = Outbound(ws, config.outbound_queue, self._slow_client)
        self.key: str | None = None
        self.authenticated = False
        self._auth_timer: asyncio.TimerHandle | None = None

    @property
    def ready(self) -> bool:
        """Authenticated, subscribed to something, and writable."""
        return self.authenticated and self.outbound.accepting and not self.subs.is_empty()

    def send_control(self, message: Message) -> int:
        """Queue one control message (always an array of one), past the queue bound."""
        if message.get("T") == "error":
            self.hub.stats.errors_sent[message["code"]] += 1
        return int(self.outbound.offer(codec.encode([message], self.fmt), control=True))

    def send_data(self, msgs: list[Message]) -> bool:
        """Queue market messages for this session alone (order book snapshots)."""
        return bool(msgs) and self.outbound.offer(codec.encode(msgs, self.fmt))

    async def run(self) -> None:
        """Serve the connection until it ends."""
        hub = self.hub
        hub.data.add(self)
        hub.stats.connections[self.stream] += 1
        self.outbound.start()
        loop = asyncio.get_running_loop()
        try:
            if self.kind.msgpack_only and self.fmt is not WireFormat.MSGPACK:
                hub.stats.errors_sent[412] += 1
                self.outbound.finish(
                    codec.encode([codec.error(412)], self.fmt), 1003, "msgpack only"
                )
                await self.ws.wait_closed()
                return
            self.send_control(codec.success("connected"))
            assert self.ws.request is not None
            headers = self.ws.request.headers
            if "APCA-API-KEY-ID" in headers:  # header auth: answered without being asked
                self._auth(headers.get("APCA-API-KEY-ID"), headers.get("APCA-API-SECRET-KEY"))
            if not self.authenticated:
                self._auth_timer = loop.call_later(hub.config.auth_timeout, self._auth_timeout)
            with contextlib.suppress(ConnectionClosed):  # also when cut without a close frame
                async for payload in self.ws:
                    self._on_message(payload)
        finally:
            if self._auth_timer is not None:
                self._auth_timer.cancel()
            hub.data.discard(self)
            hub.release_slot(self, clean=self.ws.close_code not in (None, 1006))
            await self.outbound.stop()

    def _on_message(self, payload: codec.Frame) -> None:
        try:
            message = codec.decode_client(payload)
        except ClientMessageError as exc:
            log.info("data client sent a malformed message: %s", exc)
            self.send_control(codec.error(400))
            return
        action = message["action"]
        if action == "auth":
            self._auth(message.get("key"), message.get("secret"))
        elif action in ("subscribe", "unsubscribe"):
            if not self.authenticated:
                self.send_control(codec.error(401))
                return
            self._count_subscription(action, message)
            try:
                self.subs.apply(action, message)
            except SubscriptionError as exc:
                self.send_control(codec.error(exc.code))
                return
            self.send_control(self.subs.reply())
            if not self.subs.is_empty():
                self.hub.subscribed.set()
            books = message.get("orderbooks")
            if action == "subscribe" and isinstance(books, list) and self.hub.on_orderbooks:
                self.hub.on_orderbooks(self, books)
        else:
            self.send_control(codec.error(400))

    def _count_subscription(self, action: str, message: Message) -> None:
        """Record a subscribe or unsubscribe message and its size (symbols, counted on every
        channel it names them on), for tests that check how a client chunks its messages."""
        stats = self.hub.stats
        stats.subscription_messages[action] += 1
        size = sum(len(v) for k, v in message.items() if k != "action" and isinstance(v, list))
        stats.largest_subscription_message = max(stats.largest_subscription_message, size)

    def _auth(self, key: object, secret: object) -> None:
        hub = self.hub
        hub.stats.auth_attempts[self.stream] += 1
        if self.authenticated:
            self.send_control(codec.error(403))
            return
        code = None
        if hub.faults.take_auth_failure(self.stream) or not hub.config.credentials.accepts(
            key, secret
        ):
            code = 402
        elif self.feed in hub.denied_feeds:
            code = 409
        elif not hub.claim_slot(str(key), self.feed, self):
            code = 406
        if code is not None:
            hub.stats.auth_failures[self.stream] += 1
            if hub.config.close_after_auth_error:
                hub.stats.errors_sent[code] += 1
                frame = codec.encode([codec.error(code)], self.fmt)
                self.outbound.finish(frame, 1008, codec.ERRORS[code])
            else:
                self.send_control(codec.error(code))
            return
        self.key = str(key)
        self.authenticated = True
        if self._auth_timer is not None:
            self._auth_timer.cancel()
        self.send_control(codec.success("authenticated"))

    def _auth_timeout(self) -> None:
        if not self.authenticated:
            self.hub.stats.errors_sent[404] += 1
            self.outbound.finish(
                codec.encode([codec.error(404)], self.fmt), 1008, codec.ERRORS[404]
            )

    def _slow_client(self) -> None:
        log.warning("data client on %s is too slow; disconnecting it (407)", self.feed)
        self.hub.stats.slow_clients += 1
        self.hub.stats.errors_sent[407] += 1
        self.outbound.finish(
            codec.encode([codec.error(407)], self.fmt), SLOW_CLIENT_CLOSE, codec.ERRORS[407]
        )
