"""Every Redis name this project reads or writes: queues, task names, keys and channels.

Downstream consumers depend on the key and channel names (`shared/contract.md`); change
nothing here without changing the contract.
"""

from __future__ import annotations

from dataclasses import dataclass

PRICES_QUEUE = "prices"
ORDERS_QUEUE = "orders"
QUEUES = (PRICES_QUEUE, ORDERS_QUEUE)

# Tasks are sent by name: producers never import task bodies. The `prices.` / `orders.`
# prefix decides a task's queue and its delivery policy (celery_app.config.DeliveryPolicy).
PRICES_BATCH_TASK = "prices.publish_batch"
ORDER_EVENT_TASK = "orders.publish_event"
# News articles ride the orders queue and its delivery policy: kept, never dropped.
NEWS_TASK_PREFIX = "news"
NEWS_ARTICLE_TASK = f"{NEWS_TASK_PREFIX}.publish_article"


@dataclass(frozen=True, slots=True)
class Keys:
    """Redis key and channel names under one prefix (``REDIS_KEY_PREFIX``)."""

    prefix: str = "alpaca"

    def latest(self, symbol: str) -> str:
        """Hash: event type -> the newest event's JSON for ``symbol``."""
        return f"{self.prefix}:latest:{symbol}"

    def latest_meta(self, symbol: str) -> str:
        """Internal hash: ``{type}:ts_ns`` and ``{type}:received_ns`` of the event held in
        :meth:`latest` (compared by the price script, so ``latest`` stays pure JSON).

        Under ``P:meta:``, so that no ``P:latest:*`` pattern a consumer scans matches it.
        """
        return f"{self.prefix}:meta:latest:{symbol}"

    def prices(self, symbol: str) -> str:
        """Pub/sub channel: every market-data event of ``symbol``."""
        return f"{self.prefix}:prices:{symbol}"

    def bars(self, symbol: str) -> str:
        """Sorted set: ``symbol``'s minute bars, scored by the bar's start in epoch ms."""
        return f"{self.prefix}:bars:{symbol}"

    def bars_meta(self, symbol: str) -> str:
        """Internal hash: bar start in epoch ms -> receive time (ns) of the member held for that
        minute in :meth:`bars`.

        Under ``P:meta:``, so that every key a ``P:bars:*`` scan finds is a bar history.
        """
        return f"{self.prefix}:meta:bars:{symbol}"

    def bar_gaps(self, stream: str) -> str:
        """Internal hash: the bar gaps ``stream`` (``prices``, ``crypto``) has not filled yet, its
        gap ledger: field = symbol, value = JSON ``[[first, last, opened], ...]`` (first and last
        missing bar starts in epoch ms, inclusive; opened: epoch ms when the gap was recorded),
        merged. Written by the active producer's backfill; an entry goes once its bars are handed
        to the broker, and a standby taking over finishes what is left.

        Under ``P:meta:``, so that every key a ``P:bars:*`` scan finds is a bar history.
        """
        return f"{self.prefix}:meta:gaps:{stream}"

    @property
    def bars_pattern(self) -> str:
        """SCAN pattern for every bar history (sorted sets only)."""
        return f"{self.prefix}:bars:*"

    @property
    def prices_published(self) -> str:
        """Internal hash, rewritten by every price batch (real lag, whatever the pool):
        ``at_ns`` (when it was published), ``oldest_age_ns`` / ``newest_age_ns`` (how long
        its oldest / newest event had waited since the producer read it), ``events``."""
        return f"{self.prefix}:meta:prices:published"

    @property
    def prices_pattern(self) -> str:
        """PSUBSCRIBE pattern for every symbol's price channel."""
        return f"{self.prefix}:prices:*"

    @property
    def orders_events(self) -> str:
        """Stream: every distinct order event exactly once."""
        return f"{self.prefix}:orders:events"

    @property
    def orders_open(self) -> str:
        """Set: ids of the orders whose hash holds a non-final status (kept by order.lua),
        so that reconciliation finds them without scanning every order hash."""
        return f"{self.prefix}:orders:open"

    @property
    def orders_unsettled(self) -> str:
        """Set: ids of the orders whose REST state differed from their hash at a reconciliation
        pass (a repair handed off, or the stream's event still in flight); each pass looks
        them up until they agree, whether or not Redis ever saw them."""
        return f"{self.prefix}:orders:unsettled"

    @property
    def orders_reconciled_at(self) -> str:
        """String: epoch seconds up to which reconciliation has looked at closed orders."""
        return f"{self.prefix}:orders:reconciled_at"

    @property
    def orders_channel(self) -> str:
        """Pub/sub channel: every distinct order event."""
        return f"{self.prefix}:orders"

    @property
    def orders_handoff_marker(self) -> str:
        """A counter the producer increments after each order hand-off, to ``WAIT`` on."""
        return f"{self.prefix}:meta:orders:handoff"

    @property
    def orders_malformed(self) -> str:
        """Internal counter: order events the workers dropped as malformed (INCR)."""
        return f"{self.prefix}:meta:orders:malformed"

    @property
    def orders_dead_letter(self) -> str:
        """Stream: order (and news) tasks that can never be published, each with its
        ``reason``, ``task`` and ``payload`` (JSON); never trimmed by the project. ``health``
        is unhealthy while it holds an entry; an operator reads, fixes and deletes them."""
        return f"{self.prefix}:orders:dead"

    def order(self, order_id: str) -> str:
        """Hash: the latest state of one order."""
        return f"{self.prefix}:order:{order_id}"

    def order_seen(self, dedupe_id: str) -> str:
        """Marker that an order event was already published (exactly-once dedupe)."""
        return f"{self.prefix}:orders:seen:{dedupe_id}"

    def order_state_seen(self, state_id: str) -> str:
        """Marker that an order state (event, status, filled_qty) was published, valued with
        the source that published it: a reconciliation of a state already seen adds nothing."""
        return f"{self.prefix}:orders:state:{state_id}"

    @property
    def news_channel(self) -> str:
        """Pub/sub channel: every distinct news event."""
        return f"{self.prefix}:news"

    @property
    def news_events(self) -> str:
        """Stream: every distinct news event exactly once."""
        return f"{self.prefix}:news:events"

    def news_seen(self, article_id: str) -> str:
        """Marker (with a TTL): the ``updated_at`` ns of the newest version published of an
        article; an equal or older version adds nothing."""
        return f"{self.prefix}:news:seen:{article_id}"

    def lease(self, lease: str) -> str:
        """String (JSON) with a TTL: the holder of an active/standby set of producers."""
        return f"{self.prefix}:lease:{lease}"

    def lease_epoch(self, lease: str) -> str:
        """Internal counter: the epoch of a lease, grown on every change of holder (no TTL).

        Under ``P:meta:``, so that every key a ``P:lease:*`` scan finds is a lease (a string
        with a TTL).
        """
        return f"{self.prefix}:meta:lease:{lease}:epoch"

    def lease_released(self, lease: str) -> str:
        """Internal string: when (epoch ns) a holder of ``lease`` that stepped down had closed
        its Alpaca sockets; a new holder waiting out a 406 reconnects at once after it."""
        return f"{self.prefix}:meta:lease:{lease}:released"

    def producer_health(self, name: str) -> str:
        """String (JSON) with a TTL: a producer process's heartbeat."""
        return f"{self.prefix}:health:producer:{name}"

    @property
    def producer_health_pattern(self) -> str:
        """SCAN pattern for every producer's heartbeat."""
        return f"{self.prefix}:health:producer:*"

    # --- the universe of a market-data stream, changed at run time (issue 28) ---

    def universe(self, stream: str) -> str:
        """Set: the symbols of market-data ``stream`` (``prices``, ``crypto``, ``options``,
        ``news``) once ``alpaca-broker subscribe``/``unsubscribe`` (or the client) changed it;
        before that, and after ``subscriptions STREAM --reset``, its symbols variable is the
        universe. ``*`` as a member means every symbol."""
        return f"{self.prefix}:universe:{stream}"

    def universe_meta(self, stream: str) -> str:
        """Internal hash of :meth:`universe`: ``since`` (epoch s: the set is in force, even
        empty), ``updated_at`` (the last change), ``variable`` (JSON list: the symbols
        variable as the active producer has it, which the first change starts the set from).

        Under ``P:meta:``, so that every key a ``P:universe:*`` scan finds is a universe.
        """
        return f"{self.prefix}:meta:universe:{stream}"

    @property
    def universe_changes(self) -> str:
        """Pub/sub channel: the name of a stream whose universe a command just changed; the
        active producer's watcher reads the set again and applies the difference."""
        return f"{self.prefix}:universe:changes"
