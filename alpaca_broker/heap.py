"""The garbage collector in a long-lived process: the startup heap moved out of its sight."""

from __future__ import annotations

import gc
import logging

log = logging.getLogger(__name__)


def freeze_startup_heap() -> None:
    """Collect once, then move every object alive now to the permanent generation.

    Call it when a process has imported and built what it keeps for life. A full collection
    otherwise walks all of it again: a price worker's imports (Celery, kombu, redis-py) are
    some 85,000 objects, and each full collection of them took 160-220 ms at 25,000 msgs/s,
    a stall of one of the workers long enough to set the price p99 (docs/performance.md).
    The objects frozen are never freed, which they never would be anyway.
    """
    gc.collect()
    gc.freeze()
    log.debug("heap frozen: %d objects out of the collector's sight", gc.get_freeze_count())
