"""The market data streams the simulator serves: one table entry per kind of stream.

A kind fixes the channels (in the order the ``subscription`` reply lists them), which message
type each channel carries, the default universe for ``*``, whether JSON clients are refused
(412) and which channels refuse ``*`` (413). ``ENDPOINTS`` maps each URL path to its kind and
its endpoint name (the "feed": one connection slot per key and endpoint).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from simulator.messages import CHANNEL_OF as STOCK_CHANNEL_OF

DEFAULT_UNIVERSE = ("AAPL", "MSFT", "AMZN", "NVDA", "GOOGL", "META", "TSLA", "AMD", "SPY", "QQQ")
CRYPTO_UNIVERSE = ("BTC/USD", "ETH/USD", "SOL/USD", "LTC/USD", "DOGE/USD", "AVAX/USD")
OPTION_UNIVERSE = (
    "AAPL261218C00150000",
    "AAPL261218P00150000",
    "SPY261218C00600000",
    "SPY261218P00550000",
    "TSLA261218C00300000",
)
NEWS_UNIVERSE = DEFAULT_UNIVERSE


@dataclass(frozen=True)
class StreamKind:
    """What one kind of market data stream speaks."""

    #: The stream's name for faults, stats and recordings.
    name: str
    #: ``stock``, ``crypto``, ``option`` or ``news``: which synthetic market feeds it.
    asset: str
    channels: Sequence[str]
    channel_of: Mapping[str, str]
    universe: Sequence[str]
    #: Channels the reply mirrors from ``trades`` (stocks: corrections, cancelErrors).
    implied: Sequence[str] = ()
    msgpack_only: bool = False
    #: Channels on which ``*`` is refused with 413.
    no_star: frozenset[str] = frozenset()


STOCKS = StreamKind(
    "data",
    "stock",
    ("trades", "quotes", "bars", "updatedBars", "dailyBars", "statuses", "lulds"),
    STOCK_CHANNEL_OF,
    DEFAULT_UNIVERSE,
    implied=("corrections", "cancelErrors"),
)
CRYPTO = StreamKind(
    "crypto",
    "crypto",
    ("trades", "quotes", "orderbooks", "bars", "updatedBars", "dailyBars"),
    {
        "t": "trades",
        "q": "quotes",
        "o": "orderbooks",
        "b": "bars",
        "u": "updatedBars",
        "d": "dailyBars",
    },
    CRYPTO_UNIVERSE,
)
OPTIONS = StreamKind(
    "options",
    "option",
    ("trades", "quotes"),
    {"t": "trades", "q": "quotes"},
    OPTION_UNIVERSE,
    msgpack_only=True,
    no_star=frozenset({"quotes"}),
)
NEWS = StreamKind("news", "news", ("news",), {"n": "news"}, NEWS_UNIVERSE)
KINDS: Mapping[str, StreamKind] = {k.name: k for k in (STOCKS, CRYPTO, OPTIONS, NEWS)}
#: Every channel any stream has: asking a stream for another stream's channel is a 410.
ALL_CHANNELS = frozenset(
    ch for kind in KINDS.values() for ch in (*kind.channels, *kind.implied)
) | {"imbalances"}

STOCK_FEEDS = ("iex", "sip", "test", "delayed_sip")
#: Stock feeds Alpaca serves under ``v1beta1`` (Blue Ocean ATS, derived overnight).
BETA_STOCK_FEEDS = ("boats", "overnight")
#: URL path -> (kind, endpoint name).
ENDPOINTS: Mapping[str, tuple[StreamKind, str]] = {
    **{f"/v2/{feed}": (STOCKS, feed) for feed in STOCK_FEEDS},
    **{f"/v1beta1/{feed}": (STOCKS, feed) for feed in BETA_STOCK_FEEDS},
    "/v1beta3/crypto/us": (CRYPTO, "crypto/us"),
    "/v1beta1/indicative": (OPTIONS, "indicative"),
    "/v1beta1/opra": (OPTIONS, "opra"),
    "/v1beta1/news": (NEWS, "news"),
}
PATH_OF_ENDPOINT: Mapping[str, str] = {feed: path for path, (_, feed) in ENDPOINTS.items()}


def wanted_key(message: Mapping[str, object]) -> tuple[str | None, list[str]]:
    """A message's type and the symbols a subscription must hold one of to receive it."""
    msg_type = message.get("T")
    symbols = message.get("symbols") if msg_type == "n" else [message.get("S")]
    valid = [s for s in symbols if isinstance(s, str)] if isinstance(symbols, list) else []
    return (msg_type if isinstance(msg_type, str) else None), valid


def env_lines(host: str, port: int) -> list[str]:
    """The ``.env`` lines ``alpaca-broker simulate`` prints, in the contract's order."""
    ws, http = f"ws://{host}:{port}", f"http://{host}:{port}"
    return [
        f"ALPACA_DATA_STREAM_URL={ws}/v2/iex",
        f"ALPACA_TRADING_STREAM_URL={ws}/stream",
        f"ALPACA_TRADING_API_URL={http}",
        f"ALPACA_DATA_API_URL={http}",
        f"ALPACA_CRYPTO_STREAM_URL={ws}/v1beta3/crypto/us",
        f"ALPACA_OPTION_STREAM_URL={ws}/v1beta1/indicative",
        f"ALPACA_NEWS_STREAM_URL={ws}/v1beta1/news",
    ]
