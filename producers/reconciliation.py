"""Reconciliation: after every (re)connect and periodically, converge on Alpaca's REST truth.

Alpaca replays nothing after a trading-stream gap; only REST knows what happened meanwhile,
and a task lost on its way (or a write refused for good) leaves Redis behind REST too. Every
pass compares each order that may have changed since the last one with its ``P:order:{ID}``
and repairs each difference that is not in flight. The pure half (:mod:`producers.order_diff`:
:func:`~producers.order_diff.judge`) decides; :class:`Reconciler` is the unit that fetches,
compares and hands the repairs to the order buffer as ``source: reconciliation`` events (the
same task and dedupe as streamed ones). One bad order never stops a pass: it is skipped and
counted.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import redis
from alpaca.common.enums import Sort
from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import QueryOrderStatus
from alpaca.trading.requests import GetOrdersRequest

from alpaca_broker.keys import Keys
from alpaca_broker.redis_client import connect
from alpaca_broker.schema import FINAL_STATUSES
from alpaca_broker.settings import Settings
from producers.buffer import EventBuffer, Message
from producers.order_diff import (
    InFlight,
    decimal_qty,
    judge,
    next_until,
    submitted_at,
    valid_orders,
)
from producers.supervisor import Backoff, ProducerUnit

log = logging.getLogger(__name__)

PAGE = 500
MAX_PAGES = 100
# Orders are listed from a little before the watermark: clock skew between this host and
# Alpaca, and orders submitted while the previous pass ran.
LOOKBACK_MARGIN_S = 60.0
GONE_FIELD = "gone_at"
"""Set on ``P:order:{ID}`` when REST answers 404 for a non-final order: it is no longer
looked up (an order of another account or a reset paper account); the hash is kept."""


@dataclass
class ReconcileStats:
    """What the health key shows of reconciliation; kept across restarts of the unit.

    ``last_pass_at``, ``last_checked``, ``last_repaired`` and ``last_in_flight`` describe the
    last pass that ran to its end (complete or not): when it ended, how many orders it
    compared with Redis, how many differences it handed off as repairs, and how many it left
    to the stream's own event (in flight)."""

    runs: int = 0
    recovered: int = 0
    failures: int = 0
    skipped: int = 0
    last_success_at: float | None = None
    last_error: str | None = None
    last_pass_at: float | None = None
    last_checked: int = 0
    last_repaired: int = 0
    last_in_flight: int = 0
    last_started: float | None = None  # the previous complete pass: the next watermark

    def snapshot(self) -> dict[str, Any]:
        doc = asdict(self)
        del doc["last_started"]
        return doc


class Reconciler(ProducerUnit):
    """Compares Alpaca's REST order state with ``P:order:{ID}`` and feeds the repairs into the
    order buffer. REST or Redis failures back off and retry; the stream never waits. ``wake``
    and ``stats`` outlive the unit, which the supervisor rebuilds on a crash."""

    name = "orders.reconciler"

    def __init__(
        self,
        settings: Settings,
        buffer: EventBuffer[Message],
        wake: threading.Event | None = None,
        stats: ReconcileStats | None = None,
        in_flight: InFlight | None = None,
    ) -> None:
        self._settings = settings
        self._buffer = buffer
        self._keys = Keys(settings.redis_key_prefix)
        self._wake = wake if wake is not None else threading.Event()
        self.stats = stats if stats is not None else ReconcileStats()
        self._in_flight = in_flight if in_flight is not None else InFlight()
        self._stop = threading.Event()
        self._backoff = Backoff(1.0, 30.0)
        self.complete = False
        self._queued: dict[str, int] = {}  # state -> its sequence number in the order buffer

    def trigger(self) -> None:
        """Ask for a reconciliation soon; never blocks (called on the stream's loop)."""
        self._wake.set()

    def run(self) -> None:
        key, secret = self._settings.credentials()
        rest = TradingClient(
            key,
            secret,
            paper=self._settings.alpaca_paper,
            raw_data=True,
            url_override=self._settings.trading_api_url,
        )
        store = connect(self._settings, decode_responses=True)
        failures = 0
        while not self._stop.is_set():
            self._wake.wait(self._settings.reconcile_interval)
            if self._stop.is_set():
                break
            self._wake.clear()
            try:
                self.stats.recovered += self.reconcile_once(rest, store)
                if self.complete:
                    self.stats.runs += 1
                    self.stats.last_success_at = time.time()
                    self.stats.last_error = None
                else:
                    self.stats.failures += 1
                    self.stats.last_error = "incomplete pass: not every order could be listed"
                failures = 0
            except Exception as exc:
                delay = self._backoff.delay(failures)
                failures += 1
                self.stats.failures += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("reconciliation failed (%s); retrying in %.1fs", exc, delay)
                if self._stop.wait(delay):
                    break
                self._wake.set()

    def reconcile_once(self, rest: TradingClient, store: redis.Redis) -> int:
        """One pass; returns how many repairs it handed off.

        It compares every order that may have changed since the last pass: every order REST
        lists as open; every order submitted since the watermark ``P:orders:reconciled_at``
        (less a margin), whatever its status, listed newest first (an order opened and closed
        between two passes, or while no producer listened); and, one by one, every order
        Redis holds as open (``P:orders:open``) or that an earlier pass found different
        (``P:orders:unsettled``: a repair on its way, a streamed state in flight, or an
        order Redis never saw). Any other order was final at the last complete pass and
        cannot have changed. Each difference is repaired unless the stream delivered that
        state within the in-flight window; either way the order stays watched until Redis
        agrees. When it could not look at all of them (a page failed, paging ran out) it
        hands off what it found, sets ``complete`` False and keeps the watermark where it was.
        """
        started = time.time()
        since = self._advance_watermark(store, started)
        open_orders, complete = self._open_orders(rest)
        orders = {o["id"]: o for o in open_orders}
        if since is not None:
            try:
                recent, recent_complete = self._submitted_since(rest, since - LOOKBACK_MARGIN_S)
            except Exception as exc:
                # The open orders are still worth comparing; the window is looked at again
                # next pass, because the watermark does not move past an unscanned one.
                log.warning("orders submitted since the watermark not fetched (%s)", exc)
                recent, recent_complete = [], False
            complete = complete and recent_complete
            for order in recent:
                orders[order["id"]] = order  # fetched later: at least as new
        unsettled = self._unsettled(store)
        for order_id in sorted((self._held_open(store) | unsettled) - orders.keys()):
            order = self._lookup(rest, store, order_id)
            if order is not None:
                orders[order_id] = order
        repairs: list[tuple[dict[str, Any], dict[str, Any]]] = []
        differ: list[str] = []
        in_flight = 0
        for order, held in zip(orders.values(), self._held(store, orders), strict=True):
            verdict = judge(order, held, self._in_flight)
            if verdict is None:
                continue
            differ.append(order["id"])
            if verdict.action == "repair":
                repairs.append((order, verdict.event))
            else:
                in_flight += 1
        self._settle(store, differ, unsettled & (orders.keys() - set(differ)))
        found = sum(self._hand_off(order, event) for order, event in repairs)
        if found:
            log.info("reconciliation repaired %d order(s) that differed from REST", found)
        if in_flight:
            log.info("reconciliation: %d order update(s) in flight, left to the stream", in_flight)
        self.stats.last_pass_at = time.time()
        self.stats.last_checked = len(orders)
        self.stats.last_repaired = found
        self.stats.last_in_flight = in_flight
        self.complete = complete
        if complete:
            self.stats.last_started = started
        return found

    def _settle(self, store: redis.Redis, differ: list[str], agree: set[str]) -> None:
        """Record which orders stay watched: those that ``differ`` join ``P:orders:unsettled``
        before their repair is handed off (a kill right after cannot lose them), and those
        watched that now ``agree`` with REST leave it."""
        if not differ and not agree:
            return
        pipe = store.pipeline(transaction=False)
        if differ:
            pipe.sadd(self._keys.orders_unsettled, *differ)
        if agree:
            pipe.srem(self._keys.orders_unsettled, *agree)
        pipe.execute()

    def _hand_off(self, order: dict[str, Any], event: dict[str, Any]) -> bool:
        """Put ``event`` in the order buffer unless the same state still waits there from an
        earlier pass (the broker is down: Redis cannot show it yet, and every pass would add
        it again, growing the buffer with copies)."""
        state = f"{order['id']}|{event['event']}|{decimal_qty(order.get('filled_qty'))}"
        seq = self._queued.get(state)
        if seq is not None and self._buffer.holds(seq):
            return False
        self._queued = {k: v for k, v in self._queued.items() if self._buffer.holds(v)}
        self._queued[state] = self._buffer.put(Message(time.time_ns(), event, "reconciliation"))
        return True

    def _advance_watermark(self, store: redis.Redis, started: float) -> float | None:
        """The watermark to look back from, after moving it to this process's previous pass.

        The previous complete pass's events were handed off long ago, so its start is safe
        to move to; this pass's start is not (a kill right after it could lose what it
        found). With no watermark at all (a fresh Redis) there is no gap: start one now.
        """
        key = self._keys.orders_reconciled_at
        if self.stats.last_started is not None:
            store.set(key, repr(self.stats.last_started))
            return self.stats.last_started
        if store.set(key, repr(started), nx=True):
            return None
        raw = cast(str | None, store.get(key))
        return float(raw) if raw is not None else None

    def _open_orders(self, rest: TradingClient) -> tuple[list[dict[str, Any]], bool]:
        """Every order REST lists as open, oldest first, and whether every page was read.

        Alpaca's ``after`` is exclusive, so each next page starts a microsecond before the
        last order's ``submitted_at``: orders sharing that instant are not skipped (the
        overlap is removed by id). A page that adds nothing new although full means more
        than a page of orders share one instant: reported as incomplete, never skipped.
        """
        found: dict[str, dict[str, Any]] = {}
        since: datetime | None = None
        for _ in range(MAX_PAGES):
            request = GetOrdersRequest(
                status=QueryOrderStatus.OPEN,
                nested=True,
                limit=PAGE,
                after=since,
                direction=Sort.ASC,
            )
            raw = rest.get_orders(request)
            page, fresh = self._page(raw, found, "open")
            if not isinstance(raw, list) or len(raw) < PAGE:
                return list(found.values()), True
            last = submitted_at(page[-1]) if page else None
            if last is None or not fresh:
                break
            since = last - timedelta(microseconds=1)
        log.warning("open orders: stopped paging after %d pages", MAX_PAGES)
        return list(found.values()), False

    def _submitted_since(
        self, rest: TradingClient, horizon: float
    ) -> tuple[list[dict[str, Any]], bool]:
        """Every order submitted after ``horizon`` (epoch seconds), whatever its status, and
        whether every page was read: ``status=all`` with ``after`` = ``horizon``, newest
        first, each next page ending (``until``) where the last one's oldest order was
        submitted (:func:`~producers.order_diff.next_until`), until a page is short or
        reaches back past ``horizon``. Alpaca has no page token and filters on submission
        time only: what changed since the last pass without being submitted since is open
        in REST or watched in Redis, and :meth:`reconcile_once` looks at those apart."""
        found: dict[str, dict[str, Any]] = {}
        floor = datetime.fromtimestamp(horizon, UTC)
        until: datetime | None = None
        for _ in range(MAX_PAGES):
            request = GetOrdersRequest(
                status=QueryOrderStatus.ALL,
                nested=True,
                limit=PAGE,
                after=floor,
                until=until,
                direction=Sort.DESC,
            )
            raw = rest.get_orders(request)
            page, fresh = self._page(raw, found, "all")
            full = isinstance(raw, list) and len(raw) >= PAGE
            done, until = next_until(page, full, floor)
            if done:
                return list(found.values()), True
            if until is None or not fresh:
                break
        log.warning("orders since the watermark: stopped paging after %d pages", MAX_PAGES)
        return list(found.values()), False

    def _page(
        self, raw: object, found: dict[str, dict[str, Any]], status: str
    ) -> tuple[list[dict[str, Any]], bool]:
        """The well-shaped orders of ``raw`` (added to ``found``), and whether any was new."""
        page, bad = valid_orders(raw)
        if bad:
            self.stats.skipped += bad
            log.warning("skipped %d malformed order(s) in a %s page", bad, status)
        fresh = any(o["id"] not in found for o in page)
        found.update((o["id"], o) for o in page)
        return page, fresh

    def _lookup(self, rest: TradingClient, store: redis.Redis, order_id: str) -> Any:
        """REST's state of one watched order; None when it is gone or fails."""
        try:
            order = rest.get_order_by_id(order_id)
        except APIError as exc:
            if exc.status_code == 404:
                log.warning("order %s is unknown to Alpaca; no longer reconciled", order_id)
                key = self._keys.order(order_id)
                if store.exists(key):  # a hash Redis holds is kept, marked; none is made
                    store.hset(key, GONE_FIELD, repr(time.time()))
                store.srem(self._keys.orders_open, order_id)
                store.srem(self._keys.orders_unsettled, order_id)
            else:
                log.warning("order %s not fetched (%s); skipped this pass", order_id, exc)
            self.stats.skipped += 1
            return None
        good, _ = valid_orders([order])
        if not good:
            self.stats.skipped += 1
            log.warning("order %s: malformed REST answer skipped", order_id)
            return None
        return good[0]

    def _held(self, store: redis.Redis, orders: dict[str, dict[str, Any]]) -> list[dict[str, str]]:
        """``P:order:{ID}`` of each of ``orders``, in their order, in one round trip."""
        pipe = store.pipeline(transaction=False)
        for order_id in orders:
            pipe.hgetall(self._keys.order(order_id))
        return cast(list[dict[str, str]], pipe.execute())

    def _unsettled(self, store: redis.Redis) -> set[str]:
        """Orders an earlier pass found different from REST (``P:orders:unsettled``)."""
        return cast(set[str], store.smembers(self._keys.orders_unsettled))

    def _held_open(self, store: redis.Redis) -> set[str]:
        """Orders Redis holds as not final (they may have changed while we were away).

        Read from the open-order index ``P:orders:open`` that order.lua keeps: the cost
        follows the open orders, not the history (a SCAN of every ``P:order:*`` hash grew
        with every order ever seen). Ids whose hash is final, gone or expired leave it.
        """
        self._index_existing(store)
        index = self._keys.orders_open
        ids = sorted(cast(set[str], store.smembers(index)))
        pipe = store.pipeline(transaction=False)
        for order_id in ids:
            pipe.hmget(self._keys.order(order_id), "status", GONE_FIELD)
        held = pipe.execute()
        open_ids: set[str] = set()
        stale: list[str] = []
        for order_id, (status, gone) in zip(ids, held, strict=True):
            if status is not None and status not in FINAL_STATUSES and gone is None:
                open_ids.add(order_id)
            else:
                stale.append(order_id)
        if stale:
            store.srem(index, *stale)
        return open_ids

    def _index_existing(self, store: redis.Redis) -> None:
        """Once per Redis: index the open orders written before the index existed (one SCAN,
        then a marker), so that an upgrade reconciles them too."""
        marker = f"{self._keys.orders_open}:built"
        if store.exists(marker):
            return
        prefix = self._keys.order("")
        keys = list(store.scan_iter(match=f"{prefix}*", count=1000))
        pipe = store.pipeline(transaction=False)
        for key in keys:
            pipe.hget(key, "status")
        found = [
            key[len(prefix) :]
            for key, status in zip(keys, pipe.execute(), strict=True)
            if status is not None and status not in FINAL_STATUSES
        ]
        if found:
            store.sadd(self._keys.orders_open, *found)
        store.set(marker, "1")

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def snapshot(self) -> dict[str, Any]:
        return self.stats.snapshot()
