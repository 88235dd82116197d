"""The table of stream kinds, and the units each kind runs.

Every stream the producer can hold is one :class:`StreamKind` entry in :data:`STREAMS`: its
alpaca-py client class and endpoint setting, how its channels are subscribed, the read loop
and the normalizer family, its silence timeout, the Celery task that carries its messages,
and its buffer policy. The read loop, the hand-off, the reconnect policy, the heartbeat and
the metrics all take what they need from the entry; adding a stream kind is one entry here
plus its client module (``producers/clients/``) and its normalizer (``tasks/``).
"""

from __future__ import annotations

import atexit
import functools
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from alpaca.data.live.crypto import CryptoDataStream
from alpaca.data.live.news import NewsDataStream
from alpaca.data.live.option import OptionDataStream
from alpaca.data.live.stock import StockDataStream
from alpaca.trading.stream import TradingStream
from celery import Celery

from alpaca_broker.keys import (
    NEWS_ARTICLE_TASK,
    ORDER_EVENT_TASK,
    ORDERS_QUEUE,
    PRICES_BATCH_TASK,
    PRICES_QUEUE,
)
from alpaca_broker.recording import RecordingWriter
from alpaca_broker.schema import (
    CRYPTO_REQUIRED_KEYS,
    NEWS_REQUIRED_KEYS,
    OPTION_REQUIRED_KEYS,
    REQUIRED_KEYS,
)
from alpaca_broker.settings import Settings
from producers.backfill import Backfiller, BackfillState, BarSource, HistoryTrimmer
from producers.buffer import EventBuffer, Message
from producers.clients import crypto, news, options, stocks
from producers.clients.market import MARKET_WEBSOCKET_PARAMS, MarketDataClient
from producers.clients.trading import WEBSOCKET_PARAMS, TradingStreamClient
from producers.connection import ReconnectPolicy, StreamClient, StreamUnit
from producers.handoff import BatchPolicy, Handoff, Send, batch_sender, each_sender
from producers.handover import ReleaseWatch
from producers.health import StreamStatus
from producers.order_diff import InFlight
from producers.reconciliation import Reconciler, ReconcileStats
from producers.replicated import replicated
from producers.supervisor import Backoff, UnitFactory
from producers.universe import StreamUniverse, UniverseWatcher

Reader = Literal["market", "trading"]
Delivery = Literal["batch", "each"]

PIPELINED_TASKS = 8
"""Tasks queued in one round trip when a backlog waits (``producers.handoff``): up to this
many price batches, or this many one-event tasks (orders, news)."""


@dataclass(frozen=True)
class StreamKind:
    """One kind of Alpaca stream, as the producer runs it.

    ``name`` is the ``--streams`` name and the stream's name in the health key and metrics.
    Market-data kinds (``reader="market"``) are bounded (a newer price supersedes an older
    one, so the oldest is dropped when the broker is down for long) and batched; the order
    stream is unbounded (nothing is ever dropped), sent one task per event, and reconciled
    through REST after every (re)connect.
    """

    name: str
    client: type[Any]
    """alpaca-py's stream class (it supplies connect, authenticate and close)."""
    url: Callable[[Settings], str]
    """The endpoint setting (``ALPACA_*_STREAM_URL`` or Alpaca's default)."""
    subscription: Callable[[Settings], dict[str, list[str]]]
    """The subscribe message's channel lists, from the kind's settings."""
    reader: Reader
    family: str
    """The normalizer family: the workers' ``asset_class`` and the raw keys it requires."""
    required_keys: Mapping[str, frozenset[str]]
    silence_timeout: Callable[[Settings], float | None]
    """Seconds without market data after which the socket counts as silent (None: never)."""
    task: str
    delivery: Delivery
    bounded: bool
    reconcile: bool = False
    record_as: str = "data"
    websocket_params: Mapping[str, Any] | None = None
    check: Callable[[Settings], None] = lambda s: None
    """Raises ConfigError (exit 2) when the kind's settings cannot work."""
    time_keys: tuple[str, ...] = ("t",)
    """Raw keys holding msgpack Timestamps, sent to the workers as int ns."""
    backfill: BarSource | None = None
    """Where minute bars a gap hid are fetched from after every (re)connect (None: never);
    a kind with one also trims its bar histories."""

    @property
    def queue(self) -> str:
        """The Celery queue its tasks go to: the task name's prefix (``celery_app.config``)."""
        return PRICES_QUEUE if self.task.startswith(f"{PRICES_QUEUE}.") else ORDERS_QUEUE


def _market(
    name: str,
    client: type[Any],
    url: Callable[[Settings], str],
    family: str,
    required_keys: Mapping[str, frozenset[str]],
    subscription: Callable[[Settings], dict[str, list[str]]],
    **options: Any,
) -> StreamKind:
    """A market-data kind: bounded, batched to ``prices.publish_batch``."""
    defaults: dict[str, Any] = {
        "reader": "market",
        "task": PRICES_BATCH_TASK,
        "delivery": "batch",
        "bounded": True,
        "silence_timeout": lambda s: s.data_timeout or None,
        "record_as": name,
        "websocket_params": MARKET_WEBSOCKET_PARAMS,
    }
    fields = {**defaults, **options}
    return StreamKind(name, client, url, subscription, family=family,
                      required_keys=required_keys, **fields)  # fmt: skip


STREAMS: dict[str, StreamKind] = {
    "prices": _market(
        "prices",
        StockDataStream,
        lambda s: s.data_stream_url,
        "us_equity",
        REQUIRED_KEYS,
        stocks.subscription,
        record_as="data",
        backfill=stocks.BARS,
    ),
    "orders": StreamKind(
        name="orders",
        client=TradingStream,
        url=lambda s: s.trading_stream_url,
        subscription=lambda s: {},
        reader="trading",
        family="order",
        required_keys={},
        silence_timeout=lambda s: None,  # orders can be quiet for hours; pings catch a dead peer
        task=ORDER_EVENT_TASK,
        delivery="each",
        bounded=False,
        reconcile=True,
        record_as="trading",
        websocket_params=WEBSOCKET_PARAMS,
        time_keys=(),
    ),
    "crypto": _market(
        "crypto",
        CryptoDataStream,
        lambda s: s.alpaca_crypto_stream_url,
        "crypto",
        CRYPTO_REQUIRED_KEYS,
        crypto.subscription,
        check=crypto.check,
        backfill=crypto.BARS,
    ),
    "options": _market(
        "options",
        OptionDataStream,
        lambda s: s.option_stream_url,
        "us_option",
        OPTION_REQUIRED_KEYS,
        options.subscription,
        check=options.check,
    ),
    "news": _market(
        "news",
        NewsDataStream,
        lambda s: s.alpaca_news_stream_url,
        "news",
        NEWS_REQUIRED_KEYS,
        news.subscription,
        # An article is an event to keep, not a price to supersede: never dropped, one task
        # each, published exactly once. News can be quiet for an hour: pings catch a dead peer.
        task=NEWS_ARTICLE_TASK,
        delivery="each",
        bounded=False,
        silence_timeout=lambda s: None,
        time_keys=("created_at", "updated_at"),
    ),
}


def reconnect_policy(settings: Settings) -> ReconnectPolicy:
    """One reconnect policy for every stream: jittered backoff, and Alpaca's 406 wait (cut
    short, with a lease, when a deposed holder says it closed its socket)."""
    lease = settings.producer_lease
    freed = ReleaseWatch(settings, lease).freed if lease else None
    return ReconnectPolicy(Backoff(1.0, 30.0), settings.connection_limit_wait, slot_freed=freed)


def make_client(
    kind: StreamKind,
    settings: Settings,
    status: StreamStatus,
    sink: Callable[[Message], object],
    recorder: RecordingWriter | None,
    universe: StreamUniverse | None = None,
) -> StreamClient:
    """A fresh client of ``kind`` (alpaca-py's class, wrapped in the kind's read loop); a
    market-data kind subscribes ``universe`` (its variable's symbols, fixed, when None)."""
    key, secret = settings.credentials()
    params = dict(kind.websocket_params) if kind.websocket_params else None
    stream = kind.client(
        key, secret, raw_data=True, url_override=kind.url(settings), websocket_params=params
    )
    if kind.reader == "trading":
        return TradingStreamClient(stream, status, sink, recorder=recorder)
    return MarketDataClient(
        stream,
        kind.subscription(settings),
        kind.required_keys,
        status,
        sink,
        silence_timeout=kind.silence_timeout(settings),
        recorder=recorder,
        record_as=kind.record_as,
        universe=universe,
    )


@dataclass
class Stream:
    """One running stream: its kind, status and buffer, and the units that serve it."""

    kind: StreamKind
    status: StreamStatus
    buffer: EventBuffer[Message]
    units: dict[str, UnitFactory]
    reconciliation: ReconcileStats | None = None

    @property
    def gated(self) -> tuple[str, ...]:
        """The units only an active producer runs: the Alpaca socket and REST reconciler."""
        return tuple(name for name in self.units if not name.endswith(".handoff"))


def task_sender(kind: StreamKind, app: Celery, settings: Settings) -> Send[Message]:
    """How ``kind``'s messages become Celery tasks: batches, or one task each (confirmed by
    a replica when the primary has one: ``producers.replicated``)."""
    if kind.delivery == "batch":
        return batch_sender(app, kind.task, kind.family, kind.time_keys, settings.price_batch_size)
    return replicated(each_sender(app, kind.task, kind.time_keys), settings)


def _noted(in_flight: InFlight, buffer: EventBuffer[Message], message: Message) -> int:
    in_flight.note(message)
    return buffer.put(message)


def build_stream(
    kind: StreamKind,
    settings: Settings,
    send: Send[Message],
    recorder: RecordingWriter | None = None,
    backfill_send: Send[Message] | None = None,
) -> Stream:
    """The units of one stream: its read loop, its hand-off through ``send``, (orders) its
    reconciler, and (bar kinds) its backfill, which sends through ``backfill_send`` (its own
    sender: a TaskSender serves one thread; ``send`` when None, which must then be safe to
    call from a second thread) and its history trimmer."""
    status = StreamStatus(kind.name)
    maxlen = settings.price_buffer_size if kind.bounded else None
    buffer: EventBuffer[Message] = EventBuffer(status, maxlen=maxlen)
    if kind.delivery == "batch":
        policy = BatchPolicy(
            settings.price_batch_size, settings.price_batch_ms / 1000, PIPELINED_TASKS
        )
    else:  # one event at a time, no linger; those that queued meanwhile, in one round trip
        policy = BatchPolicy(1, 0, PIPELINED_TASKS)
    # The reconciler's wake-up and counters outlive the unit: a crashed reconciler is rebuilt
    # fresh, and the stream's (re)connects still reach the new one.
    wake = threading.Event()
    stats = ReconcileStats() if kind.reconcile else None
    in_flight = InFlight() if kind.reconcile else None
    sink: Callable[[Message], object] = buffer.put
    if in_flight is not None:  # the reconciler skips states the stream already delivered
        sink = functools.partial(_noted, in_flight, buffer)
    backfill = BackfillState(settings.market_now_ns) if kind.backfill else None
    if backfill is not None:  # the health key shows the stream's backfills beside its counters
        status.details = lambda: {"backfill": backfill.snapshot()}
    on_connected = wake.set if kind.reconcile else backfill.trigger if backfill else None
    # The universe at run time (market data): P:universe:{STREAM}, watched by a unit of its own.
    universe = None
    if kind.reader == "market":
        universe = StreamUniverse.of(kind.name, kind.subscription(settings), settings)
        status.subscriptions = universe.snapshot
        if backfill is not None:  # symbols added at run time: their bars as on a first start
            universe.on_added = backfill.trigger
    handoff = f"{kind.name}.handoff"
    units: dict[str, UnitFactory] = {
        kind.name: lambda: StreamUnit(
            kind.name,
            status,
            reconnect_policy(settings),
            lambda: make_client(kind, settings, status, sink, recorder, universe),
            on_connected,
        ),
        handoff: lambda: Handoff(handoff, buffer, status, send, policy, droppable=kind.bounded),
    }
    if stats is not None:
        units[Reconciler.name] = lambda: Reconciler(settings, buffer, wake, stats, in_flight)
    if backfill is not None and kind.backfill is not None:
        # Backfilled bars go their own way, paced, never through the live buffer.
        source, unit, trim = kind.backfill, f"{kind.name}.backfill", f"{kind.name}.trim"
        if universe is not None:  # the bars of the universe as it stands, not the variable's
            source = universe.bar_source(source)
        bars_send = backfill_send or send
        units[unit] = lambda: Backfiller(unit, kind.name, source, settings, bars_send, backfill)
        units[trim] = lambda: HistoryTrimmer(trim, source, settings, backfill)
    if universe is not None:
        watcher = f"{kind.name}.universe"
        units[watcher] = functools.partial(UniverseWatcher, watcher, universe, settings)
    return Stream(kind, status, buffer, units, stats)


def build_streams(
    settings: Settings, names: tuple[str, ...], app: Celery, prices_app: Celery | None = None
) -> list[Stream]:
    """The chosen streams, in order, sharing one recorder when ALPACA_RECORD_FILE is set;
    the tasks of the ``prices`` queue go through ``prices_app`` (its broker) when given."""
    recorder = None
    if settings.record_file:
        meta = {"streams": list(names), "feed": settings.alpaca_feed}
        recorder = RecordingWriter(settings.record_file, meta=meta, flush_every=100)
        atexit.register(recorder.close)  # flush the last frames when the process ends
    kinds = [STREAMS[name] for name in names]
    apps = {PRICES_QUEUE: prices_app or app}
    streams = []
    for kind in kinds:
        kind_app = apps.get(kind.queue, app)
        send = task_sender(kind, kind_app, settings)
        backfill_send = task_sender(kind, kind_app, settings) if kind.backfill else None
        streams.append(build_stream(kind, settings, send, recorder, backfill_send))
    return streams
