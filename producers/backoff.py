"""Exponential backoff with jitter, as a pure function."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays that double from ``base`` up to ``cap``, each drawn from ``[d/2, d]``.

    Half the range stays fixed so restarts never bunch up at zero; the other half is jitter
    so that many clients do not retry in step (Alpaca answers a reconnect storm with 429).
    """

    base: float = 1.0
    cap: float = 30.0

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """The wait before retry number ``attempt`` (0 for the first retry)."""
        ceiling = min(self.cap, self.base * (2 ** min(attempt, 32)))
        return (rng or random).uniform(ceiling / 2, ceiling)
