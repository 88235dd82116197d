"""``alpaca-broker simulate``: run the simulator in the foreground until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
from pathlib import Path

from simulator.config import DATA_FEEDS, Credentials, SimulatorConfig
from simulator.faults import PERIODIC_KINDS, PeriodicFault
from simulator.kinds import env_lines
from simulator.market import DEFAULT_UNIVERSE, parse_mix
from simulator.server import SimulatorServer

log = logging.getLogger(__name__)


def _rate(text: str) -> float | None:
    if text == "max":
        return None
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be positive, or 'max'")
    return value


def _symbols(text: str) -> tuple[str, ...]:
    symbols = tuple(s.strip().upper() for s in text.split(",") if s.strip())
    if not symbols:
        raise argparse.ArgumentTypeError("give at least one symbol")
    return symbols


def _mix(text: str) -> dict[str, float]:
    try:
        return parse_mix(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _fault(text: str) -> PeriodicFault:
    try:
        return PeriodicFault.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    """The ``alpaca-broker simulate`` argument parser."""
    p = argparse.ArgumentParser(
        prog="alpaca-broker simulate",
        description="A local Alpaca simulator: stock streams (/v2/iex, /v2/sip, /v2/test, "
        "/v2/delayed_sip, /v1beta1/boats, /v1beta1/overnight), crypto (/v1beta3/crypto/us), "
        "options (/v1beta1/indicative, /v1beta1/opra) and news (/v1beta1/news) streams, the "
        "trading stream (/stream), the REST order endpoints (/v2/orders, /v2/account, "
        "/v2/account/activities/FILL) and historical bars (/v2/stocks/bars, "
        "/v1beta3/crypto/us/bars) on one port, speaking Alpaca's wire protocols. Prints the "
        "seven .env lines of its URLs at start.",
    )
    g = p.add_argument_group("server")
    g.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    g.add_argument("--port", type=int, default=8765, help="port; 0 picks a free one (8765)")
    g.add_argument("--key", help="the only API key accepted (default: any key)")
    g.add_argument(
        "--secret",
        help="the only API secret accepted (default: SIMULATOR_SECRET from the environment or "
        ".env, which keeps it out of `ps`; else any secret)",
    )
    g.add_argument(
        "--no-compression",
        action="store_true",
        help="turn off permessage-deflate (on by default, as on Alpaca)",
    )
    g.add_argument(
        "--trading-text-frames",
        action="store_true",
        help="send trade_updates in text frames (default: binary, as paper does)",
    )
    g.add_argument("--log-level", default="INFO", help="log level (INFO)")
    g = p.add_argument_group("synthetic market")
    g.add_argument(
        "--symbols",
        type=_symbols,
        default=DEFAULT_UNIVERSE,
        help="comma-separated universe a '*' subscription gets "
        f"(default {','.join(DEFAULT_UNIVERSE)}); explicitly subscribed symbols "
        "always get data",
    )
    g.add_argument(
        "--rate",
        type=_rate,
        default=100.0,
        help="market messages per second per data endpoint, or 'max' for as fast "
        "as the clients take them; 'max' prints the achieved rate (default 100)",
    )
    g.add_argument(
        "--mix",
        type=_mix,
        default=None,
        help="relative weights of the drawn types, e.g. t=40,q=55,s=1,l=2,c=1,x=1 "
        "(the default); bars b, d, u follow the market clock",
    )
    g.add_argument(
        "--frame-size", type=int, default=100, help="most market messages per frame (default 100)"
    )
    g.add_argument(
        "--pool",
        type=int,
        default=0,
        metavar="FRAMES",
        help="send FRAMES frames drawn once, over and over (each encoded once), so that a "
        "client's read rate is the limit, not the drawing; their times repeat, so a pipeline "
        "finds them stale; 0 = draw every frame anew (default)",
    )
    g.add_argument(
        "--restamp",
        action="store_true",
        help="with --pool and a --rate, give each message the time it is sent at (the frame's "
        "timestamp bytes patched in place): a live market for a pipeline, cheaply",
    )
    g.add_argument(
        "--clock-speed",
        type=float,
        default=1.0,
        help="market clock speed; 60 gives a minute bar every second (default 1)",
    )
    g.add_argument(
        "--order-rate",
        type=float,
        default=0.5,
        help="synthetic orders started per second, each with a random lifecycle "
        "(new, partial_fill, fill, cancel, replace, reject, expire); 0 = none (0.5)",
    )
    g.add_argument(
        "--scripted",
        "--no-synthetic",
        dest="scripted",
        action="store_true",
        help="no synthetic market and no order flow (REST, faults and replay still work)",
    )
    g.add_argument(
        "--rate-interval",
        type=float,
        default=5.0,
        help="seconds between achieved-rate lines with --rate max (5)",
    )
    g.add_argument("--seed", type=int, help="random seed for a repeatable market")
    g = p.add_argument_group("limits and faults")
    g.add_argument(
        "--outbound-queue",
        type=int,
        default=4096,
        help="frames a connection may have queued before it is disconnected as a "
        "slow client (407) (default 4096)",
    )
    g.add_argument(
        "--auth-timeout",
        type=float,
        default=10.0,
        help="seconds to authenticate before 404 auth timeout (10)",
    )
    g.add_argument(
        "--reap-seconds",
        type=float,
        default=0.0,
        help="seconds a connection lost without a close frame keeps its key's slot, "
        "so reconnects get 406 (Alpaca: about 90; default 0)",
    )
    g.add_argument(
        "--symbol-limit",
        type=int,
        help="most symbols per connection on trades and quotes together: a subscribe past "
        "it gets 405 symbol limit exceeded and changes nothing (free plan: 30)",
    )
    g.add_argument(
        "--deny-symbol",
        type=_symbols,
        action="append",
        default=[],
        metavar="SYMBOLS",
        help="comma-separated symbols the plan does not cover: a subscribe naming one gets "
        "409 insufficient subscription, the subscription unchanged (repeatable)",
    )
    g.add_argument(
        "--deny-feed",
        action="append",
        choices=DATA_FEEDS,
        default=[],
        help="a feed the credentials are not entitled to: auth there gets 409 "
        "insufficient subscription (repeatable)",
    )
    g.add_argument(
        "--close-after-auth-error",
        action="store_true",
        help="close a data connection right after 402/406/409",
    )
    g.add_argument(
        "--reject-upgrades",
        type=int,
        default=0,
        metavar="N",
        help="answer the first N data-stream upgrades with HTTP --reject-status",
    )
    g.add_argument("--reject-status", type=int, default=429, help="status for that (429)")
    g.add_argument(
        "--fail-auth",
        type=int,
        default=0,
        metavar="N",
        help="fail the first N data-stream auth attempts with 402 auth failed",
    )
    g.add_argument(
        "--fail-trading-auth",
        type=int,
        default=0,
        metavar="N",
        help="answer the first N trading-stream auth attempts 'unauthorized'",
    )
    g.add_argument(
        "--fault",
        type=_fault,
        action="append",
        default=[],
        metavar="KIND:SECONDS",
        help="inject a fault every SECONDS (repeatable); KIND is one of "
        f"{', '.join(PERIODIC_KINDS)}: drop = cut all sockets without a close "
        "frame, close = close data sockets 1011, silence = current data sockets "
        "go silent, malformed = a bad data frame, error = 500 internal error, "
        "trading-outage = trading socket down (orders change meanwhile, REST only)",
    )
    g = p.add_argument_group("replay")
    g.add_argument(
        "--replay",
        type=Path,
        metavar="FILE",
        help="replay a recording (alpaca_broker.recording format) once clients are "
        "connected; implies --scripted",
    )
    g.add_argument(
        "--replay-speed",
        type=_rate,
        default=1.0,
        help="speed factor (1 = as recorded) or 'max' (default 1)",
    )
    return p


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    """The SimulatorConfig the parsed options describe."""
    scripted = args.scripted or args.replay is not None
    config = SimulatorConfig(
        host=args.host,
        port=args.port,
        credentials=Credentials(args.key, args.secret),
        symbols=args.symbols,
        rate=args.rate,
        frame_size=args.frame_size,
        pool=args.pool,
        restamp=args.restamp,
        clock_speed=args.clock_speed,
        synthetic=not scripted,
        order_rate=0.0 if scripted else args.order_rate,
        outbound_queue=args.outbound_queue,
        auth_timeout=args.auth_timeout,
        reap_seconds=args.reap_seconds,
        symbol_limit=args.symbol_limit,
        denied_symbols=frozenset(s for group in args.deny_symbol for s in group),
        denied_feeds=frozenset(args.deny_feed),
        close_after_auth_error=args.close_after_auth_error,
        trading_binary=not args.trading_text_frames,
        compression=not args.no_compression,
        seed=args.seed,
        replay=args.replay,
        replay_speed=args.replay_speed,
    )
    if args.mix is not None:
        config.mix = args.mix
    return config


async def _serve(args: argparse.Namespace, config: SimulatorConfig) -> None:
    server = SimulatorServer(config)
    server.periodic = list(args.fault)
    if args.reject_upgrades:
        server.faults.reject_upgrades("data", args.reject_status, args.reject_upgrades)
    if args.fail_auth:
        server.faults.fail_auth("data", args.fail_auth)
    if args.fail_trading_auth:
        server.faults.fail_auth("trading", args.fail_trading_auth)
    await server.start()
    host, port = config.host, server.port
    print("\n".join(env_lines(host, port)), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    reporter = (
        loop.create_task(_report_rate(server, args.rate_interval)) if config.rate is None else None
    )
    await stop.wait()
    log.info("stopping")
    if reporter is not None:
        reporter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporter
    await server.stop()


async def _report_rate(server: SimulatorServer, interval: float) -> None:
    """Print the achieved market emit rate every ``interval`` seconds while clients read."""
    stats = server.hub.stats
    last_count, last_time = stats.market_messages, time.monotonic()
    while True:
        await asyncio.sleep(interval)
        count, now = stats.market_messages, time.monotonic()
        if count > last_count:
            rate = (count - last_count) / (now - last_time)
            print(
                f"rate: {rate:,.0f} market messages/s over {now - last_time:.1f} s "
                f"(frames of {server.config.frame_size}, {count:,} in total)",
                flush=True,
            )
        last_count, last_time = count, now


def _secret_from_environment() -> str | None:
    """``SIMULATOR_SECRET`` (the settings: environment or ``.env``), or None when unset."""
    from alpaca_broker.errors import ConfigError
    from alpaca_broker.settings import exit_on_config_error, load_settings

    try:
        secret = load_settings().simulator_secret
    except ConfigError as exc:
        exit_on_config_error(exc)
    return (secret.get_secret_value() or None) if secret is not None else None


def main(argv: list[str] | None = None) -> int:
    """Run the simulator until Ctrl-C or SIGTERM; 0 on a clean stop, 2 on bad options."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.secret is None:
        args.secret = _secret_from_environment()
    try:
        config = config_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s simulator %(name)s: %(message)s",
    )
    for noisy in ("websockets", "simulator.websockets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        asyncio.run(_serve(args, config))
    except OSError as exc:
        print(
            f"alpaca-broker simulate: cannot serve on {args.host}:{args.port}: {exc}",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        pass
    return 0
