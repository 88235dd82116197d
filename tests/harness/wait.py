"""Waiting for a condition, never for a fixed time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """The condition did not hold before the deadline."""


def wait_until(
    condition: Callable[[], T | None],
    timeout: float = 10.0,
    *,
    interval: float = 0.02,
    message: str = "",
) -> T:
    """Poll ``condition`` until it returns a truthy value and return that value.

    Raises WaitTimeout (an AssertionError, so pytest shows it as a failed check) naming
    ``message`` and the last value seen when ``timeout`` seconds pass first.
    """
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = condition()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise WaitTimeout(
                f"not true after {timeout:.1f}s: {message or condition!r} (last={last!r})"
            )
        time.sleep(interval)
