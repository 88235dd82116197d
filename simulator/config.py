"""The simulator's settings, shared by the CLI and the Python API."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from simulator.market import DEFAULT_MIX, DEFAULT_UNIVERSE

DATA_FEEDS = ("iex", "sip", "test", "delayed_sip", "boats", "overnight")


@dataclass(frozen=True)
class Credentials:
    """The accepted key pair; ``None`` for either part accepts any value."""

    key: str | None = None
    secret: str | None = None

    def accepts(self, key: object, secret: object) -> bool:
        """Whether ``key``/``secret`` authenticate (constant-time comparison)."""
        if not isinstance(key, str) or not isinstance(secret, str):
            return False
        # As bytes: compare_digest refuses str with non-ASCII characters.
        return (self.key is None or hmac.compare_digest(key.encode(), self.key.encode())) and (
            self.secret is None or hmac.compare_digest(secret.encode(), self.secret.encode())
        )


@dataclass
class SimulatorConfig:
    """Everything that shapes one simulator run. Defaults suit tests (scripted, free port)."""

    host: str = "127.0.0.1"
    port: int = 0
    credentials: Credentials = field(default_factory=Credentials)
    #: The universe a ``*`` subscription gets (``/v2/test`` serves ``FAKEPACA`` instead).
    symbols: tuple[str, ...] = DEFAULT_UNIVERSE
    #: Synthetic market messages per second per data endpoint; None = as fast as possible.
    rate: float | None = 100.0
    mix: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))
    #: Most market messages in one frame.
    frame_size: int = 100
    #: Send this many frames, drawn once, over and over (0: draw every frame anew).
    pool: int = 0
    #: With ``pool`` and a rate: each message of a pool frame gets the time it is sent at.
    restamp: bool = False
    #: The market clock's speed (60 makes a minute bar every real second).
    clock_speed: float = 1.0
    synthetic: bool = False
    #: Synthetic orders started per second (each runs a random lifecycle); 0 = none.
    order_rate: float = 0.0
    #: Range of seconds between the steps of a synthetic order's lifecycle.
    order_steps: tuple[float, float] = (0.2, 1.5)
    #: Frames a connection may have queued before it is a slow client (407).
    outbound_queue: int = 4096
    auth_timeout: float = 10.0
    #: Seconds a connection lost without a close frame keeps its key's slot (406 meanwhile).
    reap_seconds: float = 0.0
    symbol_limit: int | None = None
    #: Symbols the credentials' plan does not cover: a subscribe naming one gets 409.
    denied_symbols: frozenset[str] = frozenset()
    #: Data feeds the credentials are not entitled to (auth there gets 409).
    denied_feeds: frozenset[str] = frozenset()
    #: Close a data connection right after an auth error (402/406/409) instead of waiting.
    close_after_auth_error: bool = False
    #: ``trade_updates`` JSON in binary frames (as the paper endpoint) or in text frames.
    trading_binary: bool = True
    compression: bool = True
    seed: int | None = None
    replay: Path | None = None
    #: Replay speed factor (1.0 = as recorded); None = as fast as possible.
    replay_speed: float | None = 1.0

    def __post_init__(self) -> None:
        if self.rate is not None and self.rate <= 0:
            raise ValueError("rate must be positive (or None for as fast as possible)")
        if not 1 <= self.frame_size <= 5000:
            raise ValueError("frame_size must be between 1 and 5000")
        if self.pool < 0:
            raise ValueError("pool must be 0 or more")
        if self.outbound_queue < 1:
            raise ValueError("outbound_queue must be at least 1")
        if self.clock_speed <= 0:
            raise ValueError("clock_speed must be positive")
        unknown = set(self.denied_feeds) - set(DATA_FEEDS)
        if unknown:
            raise ValueError(f"unknown feeds: {sorted(unknown)}")
