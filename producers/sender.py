"""Sends Celery tasks by name through one reused producer connection."""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery

log = logging.getLogger(__name__)

# Fail fast (about half a second) and let the hand-off thread back off and keep its batch:
# Celery's own retry would block the thread for as long as Redis stays down.
SEND_RETRY_POLICY = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.3,
}


class TaskSender:
    """One hand-off thread's connection to the broker; not shared between threads."""

    def __init__(self, app: Celery) -> None:
        self._app = app
        self._acquired: Any = None

    def send(self, task_name: str, args: list[Any], argsrepr: str | None = None) -> None:
        """Publish one task message (JSON); raises the broker's error when it cannot.

        ``argsrepr`` is what Flower and the logs show for the arguments (default: Celery's
        repr of them, which for a batch of hundreds of events costs more than it tells).
        """
        if self._acquired is None:
            self._acquired = self._app.producer_pool.acquire(block=True)
        try:
            self._app.send_task(
                task_name,
                args=args,
                producer=self._acquired,
                retry=True,
                retry_policy=SEND_RETRY_POLICY,
                argsrepr=argsrepr,
            )
        except Exception:
            self.close()  # the next send starts on a fresh connection
            raise

    def close(self) -> None:
        """Give the connection back (dropping it if it broke)."""
        if self._acquired is not None:
            try:
                self._acquired.release()
            except Exception:  # a broken connection may fail to release; it is gone either way
                log.debug("producer release failed", exc_info=True)
            self._acquired = None
