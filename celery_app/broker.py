"""kombu's Redis ack emulation, bounded for prices and patient with a full broker.

Two changes to ``kombu.transport.redis.QoS`` (kombu 5.x), installed by :func:`install` on
``kombu.transport.redis.Channel`` (``SentinelChannel`` inherits it):

* **Transient queues** (``prices``). Consumed with ``no_ack``, kombu counts no message
  against the prefetch limit: a prefork worker whose pool stalls moves the whole backlog
  from Redis into its memory (issue 18, item 5). Consumed with acks, every batch is first
  copied into the ``unacked`` hash and index and deleted again on ack. Here a price
  message is acknowledged like any other, so the prefetch limit holds (at most
  ``concurrency x worker_prefetch_multiplier`` batches in hand), but its ack state stays in
  the worker's memory: no Redis command on receipt or ack, as cheap as ``no_ack``. Prices
  stay at most once: a batch in hand dies with a SIGKILLed worker; at a warm shutdown the
  batches not started go back to the head of their queue.
* **A full or lost broker while a task is recorded.** BRPOP has already taken the message
  when kombu records it as unacked (ZADD + HSET). Stock kombu lets the error escape: on a
  full Redis (``maxmemory`` with ``noeviction``) the worker exits ("Unrecoverable error");
  on a connection error (the primary died between its BRPOP reply and the record, and the
  replica Sentinel promotes already has the pop) the consumer restarts. Either way the
  worker held the only copy of the task, and it is gone. Here the record is retried, with
  backoff, until memory frees or a primary answers (after a failover: the promoted one),
  and the task runs. The periodic restore of unacked tasks (a mutex SET) skips a round
  instead of failing on a full Redis.

And one change to ``Channel._create_client``: **one client per channel**. kombu builds a
new ``redis.Redis`` for every command it sends outside its poll loop (a task's LPUSH, an
order task's unacked record and ack), and redis-py 8 rebuilds its table of some 170
response callbacks in every constructor (redis/redis-py#3624): 170 µs of a 430 µs task
send. A ``redis.Redis`` holds no connection of its own (its pool hands one out per
command and each pipeline takes its own), so the channel keeps one per connection pool and
makes a new one when kombu replaces the pool (after a connection error).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Final

from kombu.transport import redis as redis_transport
from kombu.transport import virtual
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from alpaca_broker.errors import transient_reply
from alpaca_broker.keys import PRICES_QUEUE
from celery_app.wire import dumps_json

log = logging.getLogger(__name__)

WATCH_ONLY: Final = "alpaca_watch_only"
"""Transport option: True in a process that only asks workers (``alpaca-broker health``). Its
reply consumer would otherwise run kombu's periodic restore of unacknowledged tasks with its
own visibility timeout, and one shorter than the workers' (``CELERY_VISIBILITY_TIMEOUT`` set for
the check) put tasks a living worker holds back in the queue: delivered twice."""

TRANSIENT_QUEUES: Final = frozenset({PRICES_QUEUE})
"""Routing keys (= queue names) whose messages keep their ack state in the worker only."""

_BACKOFF_FIRST: Final = 0.1
_BACKOFF_MAX: Final = 2.0
_LOG_EVERY: Final = 30.0


def _why_unrecorded(exc: BaseException) -> str | None:
    """Why a record failed, when waiting can cure it (else None: the error escapes)."""
    code = transient_reply(exc)  # OOM, READONLY (a demoted primary), NOREPLICAS, MISCONF...
    if code == "OOM":
        return "broker out of memory"
    if code is not None:
        return f"broker refused the write ({code})"
    if isinstance(exc, (RedisConnectionError, RedisTimeoutError)):
        return "broker unreachable"
    return None


def _is_oom(exc: BaseException) -> bool:
    # redis-py raises OutOfMemoryError for a plain command; inside MULTI the queued
    # command's error can surface as a ResponseError that names OOM (alpaca_broker.errors).
    return transient_reply(exc) == "OOM"


class BoundedQoS(redis_transport.QoS):  # type: ignore[misc]
    """Redis ack emulation: transient queues tracked in memory, OOM on record waited out."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._transient: set[str] = set()

    def append(self, message: Any, delivery_tag: str) -> None:
        if message.delivery_info.get("routing_key") in TRANSIENT_QUEUES:
            self._transient.add(delivery_tag)
            virtual.QoS.append(self, message, delivery_tag)  # counted, nothing in Redis
            return
        delay, waited, logged_at = _BACKOFF_FIRST, 0.0, -_LOG_EVERY
        while True:
            try:
                super().append(message, delivery_tag)
                break
            except (ResponseError, RedisConnectionError, RedisTimeoutError) as exc:
                why = _why_unrecorded(exc)
                if why is None:
                    raise
                if waited - logged_at >= _LOG_EVERY:
                    log.warning(
                        "%s: task %s taken from the queue cannot be recorded as unacked "
                        "(%s); retrying until it can (%.0fs so far)",
                        why,
                        delivery_tag,
                        exc,
                        waited,
                    )
                    logged_at = waited
                # Blocking the consumer is deliberate: it holds the only copy of the task
                # and every other broker command would fail the same way.
                time.sleep(delay)
                waited += delay
                delay = min(delay * 2, _BACKOFF_MAX)
        if waited:
            log.warning("task %s recorded as unacked after %.1fs", delivery_tag, waited)

    def ack(self, delivery_tag: str) -> None:
        if delivery_tag in self._transient:
            self._transient.discard(delivery_tag)
            virtual.QoS.ack(self, delivery_tag)
            return
        super().ack(delivery_tag)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        if delivery_tag in self._transient:
            if requeue:
                self.restore_by_tag(delivery_tag, leftmost=True)
            self._transient.discard(delivery_tag)
            virtual.QoS.ack(self, delivery_tag)
            return
        super().reject(delivery_tag, requeue)

    def restore_visible(self, *args: Any, **kwargs: Any) -> None:
        if self.channel.connection.client.transport_options.get(WATCH_ONLY):
            return  # a watcher moves no task (WATCH_ONLY)
        # The periodic scan for unacked tasks past their visibility timeout takes a mutex
        # (SET NX), which a full broker refuses: skip this round instead of letting the
        # error stop the worker. The next round scans again.
        try:
            super().restore_visible(*args, **kwargs)
        except ResponseError as exc:
            if not _is_oom(exc):
                raise
            log.warning("broker out of memory: unacked restore skipped this round")

    def restore_by_tag(self, tag: Any, client: Any = None, leftmost: bool = False) -> None:
        if isinstance(tag, bytes):
            tag = tag.decode()
        message = self._delivered.get(tag) if tag in self._transient else None
        if message is None:
            super().restore_by_tag(tag, client, leftmost)
            return
        # Not in the unacked hash: put the worker's own copy back at the head of its queue.
        self._transient.discard(tag)
        info = message.delivery_info
        with self.channel.conn_or_acquire(client) as conn:
            pipe = conn.pipeline()
            self.channel._do_restore_message(
                message._raw, info["exchange"], info["routing_key"], pipe, True
            )
            pipe.execute()


_stock_create_client: Final = redis_transport.Channel._create_client


def _create_client(channel: Any, asynchronous: bool = False) -> Any:
    """kombu's client for ``channel``, built once per connection pool instead of per call."""
    if asynchronous:  # the poll loop's client: kombu caches it itself
        return _stock_create_client(channel, True)
    client = channel.__dict__.get("_reused_client")
    if client is None or client.connection_pool is not channel.pool:
        client = channel.__dict__["_reused_client"] = _stock_create_client(channel, False)
    return client


def install() -> None:
    """Make kombu's Redis channels (plain and Sentinel) use :class:`BoundedQoS` and one
    client each, and write their message envelopes with :func:`celery_app.wire.dumps_json`
    (the same JSON; kombu's encoder took more of the producer's hand-off than anything else
    but the socket)."""
    redis_transport.Channel.QoS = BoundedQoS
    redis_transport.Channel._create_client = _create_client
    redis_transport.dumps = dumps_json
