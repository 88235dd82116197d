"""A stream's connection state and counters, shared by its threads and read by the health key."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Literal

log = logging.getLogger(__name__)

StreamState = Literal["connecting", "connected", "disconnected", "auth_failed", "stopped"]


@dataclass
class StreamStatus:
    """State machine and counters of one stream.

    Each counter has a single writer thread (the read loop counts ``received``, ``malformed``
    and ``reconnects``; the hand-off thread counts ``enqueued`` and ``dropped``), so plain
    integer updates suffice under the GIL.
    """

    name: str
    state: StreamState = "connecting"
    received: int = 0
    enqueued: int = 0
    dropped: int = 0
    reconnects: int = 0
    malformed: int = 0
    last_message_at: float | None = None
    since: float = field(default_factory=time.time)

    def set_state(self, state: StreamState) -> None:
        """Move to ``state`` and log the transition once."""
        if state != self.state:
            log.info("%s stream: %s -> %s", self.name, self.state, state)
            self.state, self.since = state, time.time()

    def snapshot(self) -> dict[str, Any]:
        """The health key's view of this stream."""
        return {
            "state": self.state,
            "since": self.since,
            "last_message_at": self.last_message_at,
            "received": self.received,
            "enqueued": self.enqueued,
            "dropped": self.dropped,
            "reconnects": self.reconnects,
            "malformed": self.malformed,
        }
