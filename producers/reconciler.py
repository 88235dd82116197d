"""The reconciler: after every (re)connect and periodically, recover missed order updates."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any, cast

import redis
from alpaca.common.enums import Sort
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import QueryOrderStatus
from alpaca.trading.requests import GetOrdersRequest

from alpaca_broker.keys import Keys
from alpaca_broker.settings import Settings
from producers.backoff import Backoff
from producers.buffer import EventBuffer
from producers.reconcile import FINAL_STATUSES, missed_event
from producers.unit import ProducerUnit

log = logging.getLogger(__name__)

OrderItem = tuple[int, dict[str, Any], str]

PAGE = 500
MAX_PAGES = 100
# Closed orders are looked up from a little before the watermark: clock skew between this
# host and Alpaca, and orders submitted while the previous pass ran.
LOOKBACK_MARGIN_S = 60.0


class Reconciler(ProducerUnit):
    """Diffs Alpaca's REST order state against ``P:order:{ID}`` and feeds the differences
    into the order buffer as ``source: reconciliation`` events (the same task and dedupe as
    streamed ones). REST or Redis failures back off and retry; the stream never waits."""

    name = "orders.reconciler"

    def __init__(self, settings: Settings, buffer: EventBuffer[OrderItem]) -> None:
        self._settings = settings
        self._buffer = buffer
        self._keys = Keys(settings.redis_key_prefix)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._backoff = Backoff(1.0, 30.0)
        self._last_started: float | None = None
        self.runs = 0
        self.recovered = 0

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
        store = redis.Redis.from_url(self._settings.redis_url, decode_responses=True)
        failures = 0
        while not self._stop.is_set():
            self._wake.wait(self._settings.reconcile_interval)
            if self._stop.is_set():
                break
            self._wake.clear()
            try:
                self.recovered += self.reconcile_once(rest, store)
                self.runs += 1
                failures = 0
            except Exception as exc:
                delay = self._backoff.delay(failures)
                failures += 1
                log.warning("reconciliation failed (%s); retrying in %.1fs", exc, delay)
                if self._stop.wait(delay):
                    break
                self._wake.set()

    def reconcile_once(self, rest: TradingClient, store: redis.Redis) -> int:
        """One pass; returns how many missed events it handed off.

        It looks at every open order, every order Redis holds as open, and every order
        submitted since the watermark (``P:orders:reconciled_at``) whatever its status: an
        order opened and closed while no producer listened is in neither of the first two.
        """
        started = time.time()
        since = self._advance_watermark(store, started)
        orders = {o["id"]: o for o in self._orders(rest, QueryOrderStatus.OPEN, None)}
        complete = True
        if since is not None:
            try:
                closed = self._orders(rest, QueryOrderStatus.CLOSED, since - LOOKBACK_MARGIN_S)
            except Exception as exc:
                # The open orders are still worth diffing; the window is looked at again
                # next pass, because the watermark does not move past an unscanned one.
                log.warning("closed orders since the watermark not fetched (%s)", exc)
                closed, complete = [], False
            for order in closed:
                orders[order["id"]] = order  # fetched later: at least as new
        for order_id in self._held_open(store) - orders.keys():
            orders[order_id] = rest.get_order_by_id(order_id)
        found = 0
        for order, held in zip(orders.values(), self._held(store, orders), strict=True):
            event = missed_event(order, held)
            if event is not None:
                self._buffer.put((time.time_ns(), event, "reconciliation"))
                found += 1
        if complete:
            self._last_started = started
        if found:
            log.info("reconciliation recovered %d missed order update(s)", found)
        return found

    def _advance_watermark(self, store: redis.Redis, started: float) -> float | None:
        """The watermark to look back from, after moving it to this process's previous pass.

        The previous pass's events were handed off long ago, so its start is safe to move to;
        this pass's start is not (a kill right after it could lose what it found). With no
        watermark at all (a fresh Redis) there is no gap to recover: start one now.
        """
        key = self._keys.orders_reconciled_at
        if self._last_started is not None:
            store.set(key, repr(self._last_started))
            return self._last_started
        if store.set(key, repr(started), nx=True):
            return None
        raw = cast(str | None, store.get(key))
        return float(raw) if raw is not None else None

    def _orders(
        self, rest: TradingClient, status: QueryOrderStatus, after: float | None
    ) -> list[dict[str, Any]]:
        """Orders of ``status`` (submitted after ``after`` if given), oldest first, every page."""
        found: list[dict[str, Any]] = []
        since = datetime.fromtimestamp(after, UTC) if after is not None else None
        for _ in range(MAX_PAGES):
            request = GetOrdersRequest(
                status=status, nested=True, limit=PAGE, after=since, direction=Sort.ASC
            )
            page = cast(list[dict[str, Any]], rest.get_orders(request))
            found += page
            if len(page) < PAGE:
                break
            since = datetime.fromisoformat(page[-1]["submitted_at"].replace("Z", "+00:00"))
        return found

    def _held(self, store: redis.Redis, orders: dict[str, dict[str, Any]]) -> list[dict[str, str]]:
        """``P:order:{ID}`` of each of ``orders``, in their order, in one round trip."""
        pipe = store.pipeline(transaction=False)
        for order_id in orders:
            pipe.hgetall(self._keys.order(order_id))
        return cast(list[dict[str, str]], pipe.execute())

    def _held_open(self, store: redis.Redis) -> set[str]:
        """Orders Redis holds as not final (they may have changed while we were away)."""
        prefix = self._keys.order("")
        keys = list(store.scan_iter(match=f"{prefix}*", count=1000))
        pipe = store.pipeline(transaction=False)
        for key in keys:
            pipe.hget(key, "status")
        statuses = pipe.execute()
        return {
            key[len(prefix) :]
            for key, status in zip(keys, statuses, strict=True)
            if status not in FINAL_STATUSES
        }

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def snapshot(self) -> dict[str, Any]:
        return {"runs": self.runs, "recovered": self.recovered}
