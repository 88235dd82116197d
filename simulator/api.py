"""The Python API: a simulator on a background thread, for tests and embedding.

    with Simulator() as sim:                       # scripted: no synthetic market
        stream = StockDataStream("k", "s", url_override=sim.data_url)
        ...
        sim.push_market([messages.trade("AAPL", now_ns(), trade_id=1, price=1.0, size=1)])
        order = sim.orders.submit("AAPL", qty="10")
        sim.orders.fill(order["id"])
        sim.drop("data")

Every method may be called from any thread; the work runs on the simulator's loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

from simulator import faults
from simulator.barsapi import BarsRequest
from simulator.codec import Frame, Message
from simulator.config import DATA_FEEDS, SimulatorConfig
from simulator.kinds import PATH_OF_ENDPOINT, env_lines
from simulator.orderbook import OrderBook
from simulator.server import SimulatorServer

T = TypeVar("T")


class Simulator:
    """A running simulator; ``start()`` (or ``with``) binds a port and serves in a thread."""

    def __init__(self, config: SimulatorConfig | None = None, **overrides: Any) -> None:
        self.config = dataclasses.replace(config or SimulatorConfig(), **overrides)
        self._server: SimulatorServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._stopping: asyncio.Event | None = None
        self._error: BaseException | None = None

    # --- lifecycle ---------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> Simulator:
        """Start serving on a background thread; returns once the port is bound."""
        self._thread = threading.Thread(target=self._run, name="alpaca-simulator", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            raise RuntimeError("the simulator did not start in time")
        if self._error is not None:
            raise RuntimeError("the simulator failed to start") from self._error
        return self

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        server = SimulatorServer(self.config)
        try:
            await server.start()
        except BaseException as exc:
            self._error = exc
            self._started.set()
            return
        self._server = server
        self._started.set()
        await self._stopping.wait()
        await server.stop()

    def stop(self, timeout: float = 10.0) -> None:
        """Close every connection and stop the thread."""
        thread = self._thread
        if thread is None or not thread.is_alive():  # never started, or already stopped
            return
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        thread.join(timeout)

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def server(self) -> SimulatorServer:
        """The loop-side server (its attributes belong to the simulator's thread)."""
        if self._server is None:
            raise RuntimeError("the simulator is not running")
        return self._server

    def call(self, func: Callable[..., T], *args: Any, timeout: float = 10.0) -> T:
        """Run ``func(*args)`` on the simulator's loop and return its result."""

        async def invoke() -> T:
            return func(*args)

        return self.call_async(invoke, timeout=timeout)

    def call_async(self, func: Callable[..., Awaitable[T]], *args: Any, timeout: float = 10.0) -> T:
        """Await ``func(*args)`` on the simulator's loop and return its result."""
        assert self._loop is not None

        async def invoke() -> T:
            return await func(*args)

        future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(
            invoke(), self._loop
        )
        return future.result(timeout)

    # --- addresses ---------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port."""
        return self.server.port

    @property
    def host(self) -> str:
        """The host the simulator listens on."""
        return self.config.host

    def data_url_for(self, feed: str) -> str:
        """The stock stream URL for ``feed`` (``iex``, ``sip``, ``test``, ``delayed_sip`` under
        ``/v2``; ``boats``, ``overnight`` under ``/v1beta1``)."""
        if feed not in DATA_FEEDS:
            raise ValueError(f"unknown feed {feed!r}")
        return f"ws://{self.host}:{self.port}{PATH_OF_ENDPOINT[feed]}"

    @property
    def data_url(self) -> str:
        """``ws://HOST:PORT/v2/iex``."""
        return self.data_url_for("iex")

    @property
    def trading_url(self) -> str:
        """``ws://HOST:PORT/stream``."""
        return f"ws://{self.host}:{self.port}/stream"

    @property
    def rest_url(self) -> str:
        """``http://HOST:PORT`` (alpaca-py's ``url_override`` for TradingClient)."""
        return f"http://{self.host}:{self.port}"

    @property
    def data_api_url(self) -> str:
        """``http://HOST:PORT``: the historical data API (``url_override`` of alpaca-py's
        ``StockHistoricalDataClient`` and ``CryptoHistoricalDataClient``)."""
        return self.rest_url

    @property
    def crypto_url(self) -> str:
        """``ws://HOST:PORT/v1beta3/crypto/us``."""
        return f"ws://{self.host}:{self.port}/v1beta3/crypto/us"

    def option_url_for(self, feed: str = "indicative") -> str:
        """The option stream URL for ``feed`` (``indicative`` or ``opra``)."""
        if feed not in ("indicative", "opra"):
            raise ValueError(f"unknown option feed {feed!r}")
        return f"ws://{self.host}:{self.port}/v1beta1/{feed}"

    @property
    def option_url(self) -> str:
        """``ws://HOST:PORT/v1beta1/indicative``."""
        return self.option_url_for("indicative")

    @property
    def news_url(self) -> str:
        """``ws://HOST:PORT/v1beta1/news``."""
        return f"ws://{self.host}:{self.port}/v1beta1/news"

    def env_lines(self) -> list[str]:
        """The ``.env`` lines the CLI prints at start, in the contract's order."""
        return env_lines(self.host, self.port)

    # --- scripted market and orders ------------------------------------------------------

    @property
    def orders(self) -> OrderBook:
        """The order book (thread-safe): submit, fill, cancel, replace, reject, expire, ..."""
        return self.server.book

    def push_market(
        self, messages: list[Message], feed: str | None = None, *, force: bool = False
    ) -> int:
        """Send ``messages`` as one frame to each data session subscribed to them (on
        ``feed``, or every feed); ``force`` sends them to every authenticated session
        regardless. Returns the number of messages queued."""
        return self.call(self.server.hub.push_market, list(messages), feed, force)

    def push_raw(self, payload: Frame, stream: str = "data", feed: str | None = None) -> int:
        """Write ``payload`` unchanged to every authenticated session of ``stream``."""
        return self.call(self.server.hub.push_raw, payload, stream, feed)

    def push_malformed(self, kind: str, feed: str | None = None) -> int:
        """Send a malformed data frame: ``not_msgpack``, ``missing_T``, ``trade_missing_fields``."""
        if kind not in faults.MALFORMED:
            raise ValueError(f"unknown malformed kind {kind!r}: one of {sorted(faults.MALFORMED)}")
        return self.push_raw(faults.MALFORMED[kind], "data", feed)

    def push_trade_update(self, envelope: dict[str, Any]) -> int:
        """Send a ``trade_updates`` envelope as is (without touching the order book)."""
        return self.call(self.server.hub.publish_trading, envelope)

    def set_market(self, enabled: bool) -> None:
        """Switch the synthetic market on or off."""
        emitter = self.server.emitter
        self.call(lambda: emitter.configure(enabled=enabled, rate=emitter.rate))

    def set_market_rate(self, rate: float | None) -> None:
        """The synthetic market's messages per second per endpoint (None: as fast as the
        clients take them)."""
        emitter = self.server.emitter
        self.call(lambda: emitter.configure(enabled=emitter.enabled, rate=rate))

    def set_order_flow(self, rate: float) -> None:
        """Synthetic orders per second (0 switches the order flow off)."""
        self.call(self.server.order_flow.set_rate, rate)

    # --- faults ------------------------------------------------------------------------

    def drop(self, stream: str = "data") -> int:
        """Cut ``stream``'s connections without a close frame."""
        return self.call(self.server.hub.drop, stream)

    def close(self, stream: str = "data", code: int = 1011, reason: str = "") -> int:
        """Close ``stream``'s connections with ``code``."""
        return self.call_async(self.server.hub.close, stream, code, reason)

    def silence(self, stream: str = "data") -> int:
        """Make ``stream``'s current connections connected-but-silent."""
        return self.call(self.server.hub.silence, stream)

    def reject_upgrades(
        self, stream: str = "data", status: int = 429, count: int | None = 1
    ) -> None:
        """Answer the next ``count`` upgrades (None: until cleared) with HTTP ``status``."""
        self.call(self.server.faults.reject_upgrades, stream, status, count)

    def clear_upgrade_rejections(self, stream: str = "data") -> None:
        """Accept upgrades on ``stream`` again."""
        self.call(self.server.faults.clear_upgrade_rejections, stream)

    def fail_auth(self, stream: str = "data", count: int | None = 1) -> None:
        """Refuse the next ``count`` auth attempts (None: until cleared)."""
        self.call(self.server.faults.fail_auth, stream, count)

    def clear_auth_failures(self, stream: str = "data") -> None:
        """Let auth succeed again."""
        self.call(self.server.faults.clear_auth_failures, stream)

    def deny_feed(self, feed: str, denied: bool = True) -> None:
        """Make auth on ``feed`` answer 409 ``insufficient subscription`` (or stop doing so)."""
        if feed not in DATA_FEEDS:
            raise ValueError(f"unknown feed {feed!r}")
        hub = self.server.hub
        self.call(hub.denied_feeds.add if denied else hub.denied_feeds.discard, feed)

    def set_reap_seconds(self, seconds: float) -> None:
        """How long a connection lost without a close frame keeps its slot (406 meanwhile)."""
        self.call(setattr, self.config, "reap_seconds", seconds)

    def hold_slot(self, key: str, feed: str = "iex", seconds: float = 90.0) -> None:
        """Make ``key``'s connection slot on ``feed`` busy for ``seconds`` (406 on auth).
        ``feed`` is an endpoint name: ``iex``, ``sip``, ..., ``crypto/us``, ``indicative``,
        ``opra``, ``news``."""
        self.call(self.server.hub.hold_slot, key, feed, seconds)

    def keep_dead_slots(self, seconds: float) -> None:
        """From now on, a client whose socket drops without a close handshake keeps its
        slot for ``seconds`` on every stream endpoint: a new connection with the same key
        gets 406 until then (Alpaca's reaping of half-dead sockets). 0 turns it off."""
        self.set_reap_seconds(seconds)

    # --- historical bars ----------------------------------------------------------------

    def fail_bars(self, count: int = 1, status: int = 500, retry_after: int = 1) -> None:
        """Answer the next ``count`` bars requests with ``status``; 429 comes with
        ``X-RateLimit-Limit``/``-Remaining``/``-Reset`` and ``Retry-After`` headers."""
        self.server.bars.fail_next(count, status, retry_after)

    def bars_requests(self) -> list[BarsRequest]:
        """Every bars request served (``path``, ``params``, ``status``), oldest first."""
        return self.server.bars.requests()

    def clear_bars_requests(self) -> None:
        """Forget the bars requests served so far."""
        self.server.bars.clear_log()

    def market_now_ns(self) -> int:
        """The market clock (the wall clock unless ``clock_speed`` says otherwise)."""
        return self.server.clock.now_ns()

    def set_outbound_limit(self, frames: int) -> None:
        """Queue bound (frames) of every current and future connection (407 beyond it)."""
        if frames < 1:
            raise ValueError("the outbound limit must be at least 1")
        hub = self.server.hub

        def apply() -> None:
            self.config.outbound_queue = frames
            for session in hub.data:
                session.outbound.limit = frames
            for trading in hub.trading:
                trading.outbound.limit = frames

        self.call(apply)

    def send_error(self, code: int, feed: str | None = None) -> int:
        """Send data-stream error ``code`` (e.g. 500, 405) to every data session."""
        return self.call(self.server.hub.send_error, code, feed)

    def trading_error(self, message: str = "internal server error") -> int:
        """The trading stream's ``{"action": "error"}`` message, then close 1011."""
        return self.call_async(self.server.hub.trading_error, message)

    @contextlib.contextmanager
    def outage(self, stream: str = "trading", status: int = 503) -> Iterator[None]:
        """While inside: ``stream``'s connections are cut and upgrades refused with
        ``status``. Order changes made meanwhile reach REST only, as on the real service."""
        self.reject_upgrades(stream, status, None)
        self.drop(stream)
        try:
            yield
        finally:
            self.clear_upgrade_rejections(stream)

    def replay_done(self) -> bool:
        """Whether the configured replay has played every frame."""
        replayer = self.server.replayer
        return replayer is not None and self.call(replayer.done.is_set)

    # --- inspection --------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counters (connections, auth attempts, errors sent, messages, ...), the live
        sessions and every authenticated data session's subscriptions."""
        return self.call(self.server.hub.snapshot)

    def subscriptions(self, feed: str | None = None) -> list[dict[str, list[str]]]:
        """The subscriptions of each authenticated data session (on ``feed`` if given)."""
        rows = self.stats()["subscriptions"]
        return [
            {k: v for k, v in row.items() if k != "feed"}
            for row in rows
            if feed is None or row["feed"] == feed
        ]
