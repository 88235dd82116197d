"""Counters a test or the CLI inspects."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Stats:
    """Running totals since start. Keys of the per-stream counters: ``data``, ``trading``
    (and ``rest`` for ``connections``)."""

    connections: Counter[str] = field(default_factory=Counter)
    upgrades_rejected: Counter[str] = field(default_factory=Counter)
    auth_attempts: Counter[str] = field(default_factory=Counter)
    auth_failures: Counter[str] = field(default_factory=Counter)
    #: Data-stream error messages sent, by code.
    errors_sent: Counter[int] = field(default_factory=Counter)
    slow_clients: int = 0
    dropped: int = 0
    market_messages: int = 0
    market_frames: int = 0
    trade_updates: int = 0
    #: Subscribe and unsubscribe messages received, by action.
    subscription_messages: Counter[str] = field(default_factory=Counter)
    #: The most symbols one subscribe or unsubscribe message named, counted per channel.
    largest_subscription_message: int = 0

    def snapshot(self) -> dict[str, Any]:
        """A plain-dict copy, safe to hand to another thread."""
        return {
            "connections": dict(self.connections),
            "upgrades_rejected": dict(self.upgrades_rejected),
            "auth_attempts": dict(self.auth_attempts),
            "auth_failures": dict(self.auth_failures),
            "errors_sent": dict(self.errors_sent),
            "slow_clients": self.slow_clients,
            "dropped": self.dropped,
            "market_messages": self.market_messages,
            "market_frames": self.market_frames,
            "trade_updates": self.trade_updates,
            "subscription_messages": dict(self.subscription_messages),
            "largest_subscription_message": self.largest_subscription_message,
        }
