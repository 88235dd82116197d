"""The simulator's server: one port, routed by path.

* ``/v2/iex``, ``/v2/sip``, ``/v2/test``, ``/v2/delayed_sip``, ``/v1beta1/boats``,
  ``/v1beta1/overnight``: the stock streams
* ``/v1beta3/crypto/us``, ``/v1beta1/indicative``, ``/v1beta1/opra``, ``/v1beta1/news``: the
  crypto, option and news streams (``simulator.kinds``)
* ``/stream``: the trading stream
* ``/v2/stocks/bars``, ``/v2/stocks/{symbol}/bars``, ``/v1beta3/crypto/us/bars``: historical
  bars (``simulator.barsapi``)
* any other ``/v2/...`` plain HTTP GET: the REST endpoints (``simulator.rest``)

WebSocket upgrades and plain HTTP share the port: websockets' ``process_request`` answers
a request without an ``Upgrade`` header itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
import logging
from collections.abc import Coroutine
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from simulator import faults as faults_mod
from simulator import rest
from simulator.barsapi import CRYPTO_BARS, BarsDesk, is_bars_path
from simulator.clock import MarketClock
from simulator.config import SimulatorConfig
from simulator.datastream import DataSession
from simulator.emitter import MarketEmitter
from simulator.faults import Faults, PeriodicFault
from simulator.hub import Hub
from simulator.kinds import ENDPOINTS
from simulator.orderbook import OrderBook
from simulator.orderflow import OrderFlow
from simulator.replay import Replayer
from simulator.tradingstream import TradingSession

log = logging.getLogger(__name__)
TRADING_PATH = "/stream"


def _json_response(status: int, body: Any, extra: dict[str, str] | None = None) -> Response:
    payload = json.dumps(body).encode()
    headers = Headers(
        [
            ("Content-Type", "application/json; charset=utf-8"),
            ("Content-Length", str(len(payload))),
            ("Connection", "close"),
            *(extra or {}).items(),
        ]
    )
    return Response(status, http.HTTPStatus(status).phrase, headers, payload)


class SimulatorServer:
    """Everything one simulator runs, on the current event loop."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.faults = Faults()
        self.hub = Hub(config, self.faults)
        self.clock = MarketClock(config.clock_speed)
        self.emitter = MarketEmitter(self.hub, config, self.clock)
        self.hub.on_orderbooks = self.emitter.orderbook_snapshots
        self.bars = BarsDesk(self.emitter.model, self.clock)
        self.book = OrderBook(price_of=self.emitter.price_of)
        self.order_flow = OrderFlow(
            self.book,
            config.symbols,
            config.order_rate,
            seed=config.seed,
            step_seconds=config.order_steps,
        )
        self.replayer = (
            Replayer(self.hub, self.book, config.replay, config.replay_speed)
            if config.replay is not None
            else None
        )
        self.periodic: list[PeriodicFault] = []
        self._server: Server | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def port(self) -> int:
        """The bound port (the real one when configured with 0)."""
        assert self._server is not None, "not started"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        """Bind and start serving, the market, the order flow, replay and periodic faults."""
        loop = asyncio.get_running_loop()

        def forward(envelope: dict[str, Any]) -> None:
            # The book is driven from any thread; its events are sent from the loop.
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody listens
                loop.call_soon_threadsafe(self.hub.publish_trading, envelope)

        self.book.add_listener(forward)
        self._server = await serve(
            self._handle,
            self.config.host,
            self.config.port,
            process_request=self._process_request,
            compression="deflate" if self.config.compression else None,
            ping_interval=20,
            ping_timeout=60,
            write_limit=2**18,
            logger=logging.getLogger("simulator.websockets"),
        )
        jobs: list[Coroutine[Any, Any, None]] = [self.emitter.run(), self.order_flow.run()]
        if self.replayer is not None:
            jobs.append(self.replayer.run())
        jobs += [self._periodic(fault) for fault in self.periodic]
        self._tasks = [loop.create_task(job) for job in jobs]
        log.info("simulator listening on %s:%d", self.config.host, self.port)

    async def stop(self) -> None:
        """Stop every task and close every connection."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        target = request.path
        path = urlsplit(target).path
        if "websocket" not in request.headers.get("Upgrade", "").lower():
            if is_bars_path(path):
                return self._bars(request, path)
            if not path.startswith("/v2/"):
                return conn.respond(http.HTTPStatus.NOT_FOUND, "Not Found\n")
            self.hub.stats.connections["rest"] += 1
            status, body = rest.handle(
                getattr(request, "method", "GET"),
                target,
                request.headers,
                self.book,
                self.config.credentials,
            )
            return _json_response(status, body)
        stream = "trading" if path == TRADING_PATH else None
        if path in ENDPOINTS:
            stream = ENDPOINTS[path][0].name
        if stream is None:
            return conn.respond(http.HTTPStatus.NOT_FOUND, "Not Found\n")
        status_code = self.faults.take_upgrade_rejection(stream)
        if status_code is not None:
            self.hub.stats.upgrades_rejected[stream] += 1
            return conn.respond(status_code, f"{http.HTTPStatus(status_code).phrase}\n")
        return None

    async def _handle(self, conn: ServerConnection) -> None:
        assert conn.request is not None
        path = urlsplit(conn.request.path).path
        if path == TRADING_PATH:
            await TradingSession(conn, self.hub).run()
        else:
            kind, feed = ENDPOINTS[path]
            await DataSession(conn, feed, self.hub, kind).run()

    def _bars(self, request: Request, path: str) -> Response:
        self.hub.stats.connections["rest"] += 1
        headers = request.headers
        if path != CRYPTO_BARS and not self.config.credentials.accepts(
            headers.get("APCA-API-KEY-ID"), headers.get("APCA-API-SECRET-KEY")
        ):
            return _json_response(401, {"code": 40110000, "message": "request is not authorized"})
        status, extra, body = self.bars.handle(request.path)
        return _json_response(status, body, extra)

    async def _periodic(self, fault: PeriodicFault) -> None:
        kinds = list(faults_mod.MALFORMED)
        turn = 0
        while True:
            await asyncio.sleep(fault.every)
            log.info("injecting fault %s", fault.kind)
            if fault.kind == "drop":
                self.hub.drop("data")
                self.hub.drop("trading")
            elif fault.kind == "close":
                await self.hub.close("data", 1011, "internal error")
            elif fault.kind == "silence":
                self.hub.silence("data")
            elif fault.kind == "malformed":
                self.hub.push_raw(faults_mod.MALFORMED[kinds[turn % len(kinds)]], "data", None)
                turn += 1
            elif fault.kind == "error":
                self.hub.send_error(500, None)
            elif fault.kind == "trading-outage":
                self.faults.reject_upgrades("trading", 503, None)
                self.hub.drop("trading")
                await asyncio.sleep(min(fault.every / 2, 10.0))
                self.faults.clear_upgrade_rejections("trading")
