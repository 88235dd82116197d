"""Fault injection state and catalogue: what the next upgrade or auth should suffer,
malformed frames, and the periodic faults the CLI schedules.

The server consults ``Faults`` at each upgrade and auth; the one-shot actions (drop, close,
silence, errors) act on live sessions and live in ``simulator.hub``.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgpack

from simulator import messages
from simulator.clock import now_ns

#: Stream names: ``data`` is the stock stream; each kind of stream has its own faults.
STREAMS = ("data", "trading", "crypto", "options", "news")
#: Malformed data frames by name: bytes that are not msgpack, a map without ``T``, and a
#: trade missing its required fields.
MALFORMED: dict[str, bytes] = {
    "not_msgpack": b"\xc1 this is not msgpack \xc1",
    "missing_T": msgpack.packb([{"S": "AAPL", "p": 1.0, "s": 1}]),
    "trade_missing_fields": msgpack.packb(
        [
            {
                "T": "t",
                "S": "AAPL",
                "t": messages.trade("AAPL", now_ns(), trade_id=1, price=1.0, size=1)["t"],
            }
        ]
    ),
}
#: Kinds ``--fault KIND:SECONDS`` may schedule.
PERIODIC_KINDS = ("drop", "close", "silence", "malformed", "error", "trading-outage")


def _check_stream(stream: str) -> None:
    if stream not in STREAMS:
        raise ValueError(f"stream must be one of {STREAMS}, not {stream!r}")


@dataclass
class _Pending:
    value: int
    remaining: int | None  # None: until cleared


class Faults:
    """One-shot or standing faults applied at upgrade and at auth, per stream."""

    def __init__(self) -> None:
        self._upgrades: dict[str, _Pending] = {}
        self._auth: dict[str, _Pending] = {}

    def reject_upgrades(self, stream: str, status: int = 429, count: int | None = 1) -> None:
        """Answer the next ``count`` upgrades (None: all until cleared) with HTTP ``status``."""
        _check_stream(stream)
        if not 400 <= status <= 599:
            raise ValueError("status must be an HTTP error status")
        self._upgrades[stream] = _Pending(status, count)

    def clear_upgrade_rejections(self, stream: str) -> None:
        """Let upgrades on ``stream`` through again."""
        self._upgrades.pop(stream, None)

    def take_upgrade_rejection(self, stream: str) -> int | None:
        """The HTTP status this upgrade gets, or None to accept it (consumes one)."""
        return _take(self._upgrades, stream)

    def fail_auth(self, stream: str, count: int | None = 1) -> None:
        """Refuse the next ``count`` auth attempts (None: all until cleared), even with
        good credentials: 402 on the data stream, ``unauthorized`` on the trading stream."""
        _check_stream(stream)
        self._auth[stream] = _Pending(1, count)

    def clear_auth_failures(self, stream: str) -> None:
        """Let auth on ``stream`` succeed again."""
        self._auth.pop(stream, None)

    def take_auth_failure(self, stream: str) -> bool:
        """Whether this auth attempt must fail (consumes one)."""
        return _take(self._auth, stream) is not None


def _take(table: dict[str, _Pending], stream: str) -> int | None:
    pending = table.get(stream)
    if pending is None:
        return None
    if pending.remaining is not None:
        pending.remaining -= 1
        if pending.remaining <= 0:
            del table[stream]
    return pending.value


@dataclass(frozen=True)
class PeriodicFault:
    """A fault the CLI injects every ``every`` seconds."""

    kind: str
    every: float

    @classmethod
    def parse(cls, spec: str) -> PeriodicFault:
        """Parse ``KIND:SECONDS`` (e.g. ``drop:30``)."""
        kind, _, every = spec.partition(":")
        if kind not in PERIODIC_KINDS:
            raise ValueError(f"unknown fault {kind!r}: one of {', '.join(PERIODIC_KINDS)}")
        try:
            seconds = float(every)
        except ValueError:
            raise ValueError(f"fault {spec!r} needs KIND:SECONDS") from None
        if seconds <= 0:
            raise ValueError(f"fault {spec!r}: SECONDS must be positive")
        return cls(kind, seconds)
