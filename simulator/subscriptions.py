"""One data-stream session's subscription set: union on subscribe, difference on unsubscribe.

Each request is checked whole before it changes anything (Alpaca: "your symbol
subscriptions are the same as they were before you sent the request that failed"), then
applied in place: a universe of tens of thousands of symbols, changed a thousand at a time,
is never copied per request."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from simulator.kinds import ALL_CHANNELS, STOCKS, StreamKind, wanted_key

#: Stock channels in the order the ``subscription`` reply lists them.
STOCK_CHANNELS: Sequence[str] = STOCKS.channels
#: Channels only the test stream (``/v2/test``) serves; its reply lists just these.
TEST_CHANNELS: Sequence[str] = ("trades", "quotes", "bars")

_SYMBOL = re.compile(r"^(\*|[A-Z][A-Z0-9.\-/]{0,20})$")
#: The channels ``--symbol-limit`` counts (Alpaca's free plan: 30 symbols of trades and
#: quotes; bars are not limited).
LIMITED: Sequence[str] = ("trades", "quotes")


class SubscriptionError(Exception):
    """A subscribe/unsubscribe the server refuses, with its data-stream error code."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class Subscriptions:
    """Ordered symbol sets per channel; ``*`` subscribes a channel to every symbol."""

    def __init__(
        self,
        *,
        test_feed: bool = False,
        symbol_limit: int | None = None,
        kind: StreamKind = STOCKS,
        denied: Collection[str] = (),
    ) -> None:
        self.kind = kind
        self.channels: Sequence[str] = TEST_CHANNELS if test_feed else kind.channels
        self._symbol_limit = symbol_limit
        self._denied = frozenset(denied)
        self._sets: dict[str, dict[str, None]] = {ch: {} for ch in self.channels}

    def apply(self, action: str, request: Mapping[str, Any]) -> None:
        """Apply a ``subscribe`` (union) or ``unsubscribe`` (difference) request.

        Validates everything first, so a refused request leaves the sets unchanged.
        Raises SubscriptionError with 400 (malformed), 410 (channel not on this stream),
        409 (a symbol the plan does not cover), 405 (over the symbol limit) or 413 (``*`` on
        a channel that refuses it).
        """
        if action not in ("subscribe", "unsubscribe"):
            raise SubscriptionError(400)
        changes: dict[str, list[str]] = {}
        for key, value in request.items():
            if key == "action":
                continue
            if key in ALL_CHANNELS and key not in self.channels:
                raise SubscriptionError(410)
            if key not in self.channels:
                raise SubscriptionError(400)
            if not isinstance(value, list) or not all(
                isinstance(s, str) and _SYMBOL.match(s) for s in value
            ):
                raise SubscriptionError(400)
            if action == "subscribe" and key in self.kind.no_star and "*" in value:
                raise SubscriptionError(413)
            if action == "subscribe" and self._denied.intersection(value):
                raise SubscriptionError(409)
            changes[key] = value
        if self._symbol_limit is not None and action == "subscribe":
            counted = {s for ch in LIMITED for s in self._sets.get(ch, {}) if s != "*"}
            counted.update(s for ch in LIMITED for s in changes.get(ch, ()) if s != "*")
            if len(counted) > self._symbol_limit:
                raise SubscriptionError(405)
        for channel, symbols in changes.items():
            held = self._sets[channel]
            for symbol in symbols:
                if action == "subscribe":
                    held[symbol] = None
                else:
                    held.pop(symbol, None)

    def reply(self) -> dict[str, Any]:
        """The full ``subscription`` message listing every channel of this stream."""
        message: dict[str, Any] = {"T": "subscription"}
        for channel in self.channels:
            message[channel] = list(self._sets[channel])
        if self.channels is self.kind.channels:
            for implied in self.kind.implied:
                message[implied] = list(self._sets["trades"])
        return message

    def wants(self, msg_type: Any, symbol: Any) -> bool:
        """Whether a message of type ``msg_type`` for ``symbol`` goes to this session."""
        return self.wants_any(msg_type, (symbol,))

    def wants_any(self, msg_type: Any, symbols: Sequence[Any]) -> bool:
        """Whether a message of type ``msg_type`` naming any of ``symbols`` goes here."""
        channel = self.kind.channel_of.get(msg_type)
        if channel is None or channel not in self._sets:
            return False
        held = self._sets[channel]
        return "*" in held or any(s in held for s in symbols)

    def covers(self, wanted: Mapping[str, Collection[str]]) -> bool:
        """Whether this session subscribed to every channel -> symbols of ``wanted`` (then
        it wants every message drawn for ``wanted``)."""
        for channel, symbols in wanted.items():
            held = self._sets.get(channel)
            if held is None or ("*" not in held and not all(s in held for s in symbols)):
                return False
        return True

    def wants_message(self, message: Mapping[str, Any]) -> bool:
        """Whether ``message`` (a stock/crypto/option message, or a news article naming
        several symbols) goes to this session."""
        msg_type, symbols = wanted_key(message)
        return self.wants_any(msg_type, symbols)

    def symbols(self, channel: str) -> list[str]:
        """The symbols (possibly ``*``) subscribed on ``channel``."""
        return list(self._sets.get(channel, {}))

    def snapshot(self) -> dict[str, list[str]]:
        """A copy of every non-empty channel's symbols."""
        return {ch: list(symbols) for ch, symbols in self._sets.items() if symbols}

    def is_empty(self) -> bool:
        """True while nothing is subscribed."""
        return not any(self._sets.values())
