"""Counting and logging malformed input: every one counted, logged at most every few seconds."""

from __future__ import annotations

import logging
import time

from producers.status import StreamStatus

log = logging.getLogger(__name__)


class MalformedLog:
    """Counts malformed frames/messages in ``status`` and logs each reason with context.

    The first occurrence of a reason is logged at once; later ones at most every
    ``interval`` seconds, with the number skipped since, so a flood cannot flood the log.
    """

    def __init__(self, status: StreamStatus, interval: float = 10.0) -> None:
        self._status = status
        self._interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def __call__(self, reason: str, context: object) -> None:
        self._status.malformed += 1
        now = time.monotonic()
        last = self._last.get(reason)
        if last is not None and now - last < self._interval:
            self._suppressed[reason] = self._suppressed.get(reason, 0) + 1
            return
        self._last[reason] = now
        skipped = self._suppressed.pop(reason, 0)
        log.warning(
            "%s stream: skipped malformed input (%s; %d more since last report): %.200r",
            self._status.name,
            reason,
            skipped,
            context,
        )
