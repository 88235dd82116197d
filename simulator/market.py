"""The synthetic market behind one data endpoint: trades, quotes and the other drawn
messages at a rate, and the bars that fall due on the market clock.

No I/O. Bars come from ``simulator.bars.BarModel`` (a function of symbol and minute, so REST
agrees with the stream); trades and quotes are drawn inside the current minute's range. The
asset class (``stock``, ``crypto``, ``option``, ``news``) picks the message shapes.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Mapping
from datetime import datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from simulator import assetmsgs, messages
from simulator.assetmsgs import OPRA_EXCHANGES, bar_message
from simulator.bars import MINUTE_NS, UPDATE_DELAY_NS, BarModel, daily_bar
from simulator.clock import MarketClock
from simulator.codec import Message
from simulator.cryptobook import CryptoBooks
from simulator.kinds import DEFAULT_UNIVERSE
from simulator.newsdesk import NewsDesk
from simulator.stockdraws import Instrument, draw_stock

__all__ = ["DEFAULT_MIX", "DEFAULT_UNIVERSE", "DRAWN_TYPES", "SyntheticMarket", "parse_mix"]

#: Relative weights of the randomly drawn stock types; bars (b, d, u) follow the clock instead.
DEFAULT_MIX: Mapping[str, float] = {"t": 40, "q": 55, "s": 1, "l": 2, "c": 1, "x": 1}
DRAWN_TYPES = frozenset("tqslcx")
#: Drawn types per asset class, with default weights (``t``/``q`` follow the configured mix).
ASSET_MIX: Mapping[str, Mapping[str, float]] = {
    "stock": DEFAULT_MIX,
    "crypto": {"t": 40, "q": 50, "o": 10},
    "option": {"t": 40, "q": 60},
    "news": {"n": 1},
}
#: News is sparse: this share of the endpoint's rate becomes articles.
NEWS_SHARE = 0.02
#: Drawn type -> the channels whose symbols it is drawn for.
POOLS: Mapping[str, tuple[str, ...]] = {
    "t": ("trades",),
    "q": ("quotes",),
    "s": ("statuses",),
    "l": ("lulds",),
    "c": ("trades",),
    "x": ("trades",),
    "o": ("orderbooks",),
    "n": ("news",),
}
_SIZES = (1, 5, 10, 50, 100, 100, 200, 500)


def parse_mix(text: str) -> dict[str, float]:
    """Parse ``t=40,q=55,s=1`` into weights; only the drawn types ``t q s l c x`` are allowed."""
    mix: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        kind, _, weight = part.partition("=")
        if kind not in DRAWN_TYPES or not weight:
            types = "".join(sorted(DRAWN_TYPES))
            raise ValueError(f"bad mix entry {part!r}: use TYPE=WEIGHT with TYPE one of {types}")
        mix[kind] = float(weight)
    if not mix or min(mix.values()) < 0 or sum(mix.values()) <= 0:
        raise ValueError("the mix needs at least one positive weight")
    return mix


class SyntheticMarket:
    """Messages for the symbols wanted on one endpoint; every symbol works on first use."""

    def __init__(
        self,
        *,
        mix: Mapping[str, float] = DEFAULT_MIX,
        sip: bool = False,
        seed: int | None = None,
        clock_speed: float = 1.0,
        asset: str = "stock",
        model: BarModel | None = None,
        clock: MarketClock | None = None,
    ) -> None:
        self._rng = random.Random(seed)
        defaults = ASSET_MIX[asset]
        weights = mix if asset == "stock" else {k: mix.get(k, w) for k, w in defaults.items()}
        self._mix = {k: float(v) for k, v in weights.items() if v > 0 and k in defaults}
        self._sip = sip
        self.asset = asset
        self.model = model or BarModel(seed)
        self.clock = clock or MarketClock(clock_speed)
        self._instruments: dict[str, Instrument] = {}
        self._books = CryptoBooks(self._rng)
        self._desk = NewsDesk(self._rng)
        self._news_budget = 0.0
        self.resync()

    def now_ns(self) -> int:
        """The market clock."""
        return self.clock.now_ns()

    def resync(self) -> None:
        """Forget which bars fell due: the next bars are those of minutes ending from now on
        (after a time with nobody to send them to)."""
        now = self.clock.now_ns()
        self._minute = now // MINUTE_NS
        self._updated_minute = (now - UPDATE_DELAY_NS) // MINUTE_NS

    def mid(self, symbol: str) -> float:
        """The current midpoint of ``symbol``."""
        return self.model.trade_price(symbol, self.clock.now_ns(), 0.5)

    def _instrument(self, symbol: str) -> Instrument:
        inst = self._instruments.get(symbol)
        if inst is None:
            inst = self._instruments[symbol] = Instrument("ABC"[sum(map(ord, symbol)) % 3])
        return inst

    def orderbook_snapshots(self, symbols: Collection[str]) -> list[Message]:
        """A full book (``r: true``) for each of ``symbols`` (sent to a new subscriber)."""
        now = self.now_ns()
        return [self._books.snapshot(s, self.mid(s), now) for s in symbols]

    def generate(self, count: int, wanted: Mapping[str, Collection[str]]) -> list[Message]:
        """``count`` drawn messages for the wanted channel -> symbols (``*`` resolved)."""
        if self.asset == "news":
            self._news_budget += count * NEWS_SHARE
            count, self._news_budget = int(self._news_budget), self._news_budget % 1
        pools = {k: sorted({s for ch in POOLS[k] for s in wanted.get(ch, ())}) for k in self._mix}
        kinds = [k for k in self._mix if pools[k]]
        if not kinds or count <= 0:
            return []
        rng = self._rng
        drawn = rng.choices(kinds, weights=[self._mix[k] for k in kinds], k=count)
        base = self.clock.reserve(count)
        out: list[Message] = []
        for offset, kind in enumerate(drawn):
            pool = pools[kind]
            if kind == "n":
                out.append(self._desk.article(pool, base + offset))
                continue
            symbol = pool[int(rng.random() * len(pool))]
            out.append(self._one(kind, symbol, base + offset))
        return out

    def _one(self, kind: str, symbol: str, ts: int) -> Message:
        inst = self._instrument(symbol)
        quote = inst.last_quote
        if kind == "q" or (kind == "t" and (quote is None or quote[0] != ts // MINUTE_NS)):
            return self._quote(symbol, ts)  # a minute's first trade follows its first quote
        if kind == "o":
            return self._books.update(symbol, self.mid(symbol), ts)
        if kind == "t" or (kind in "cx" and inst.last_trade is None):
            return self._trade(symbol, inst, ts)
        mid = self.model.trade_price(symbol, ts, 0.5)
        return draw_stock(kind, symbol, inst, ts, mid, self._rng, self._exchange())

    def _exchange(self) -> str:
        if not self._sip:
            return "V"
        return messages.EXCHANGES[int(self._rng.random() * len(messages.EXCHANGES))]

    def _spread(self, symbol: str, ts: int) -> tuple[float, float]:
        """A bid and ask around a midpoint drawn inside the current minute's bar range."""
        bar = self.model.minute_bar(symbol, ts // MINUTE_NS)
        mid = self.model.trade_price(symbol, ts, 0.3 + 0.4 * self._rng.random())
        half = 0.01 if self.asset != "crypto" else max(round(mid * 0.0001, 6), 0.000001)
        bid, ask = max(mid - half, bar.low), min(mid + half, bar.h)
        self._instrument(symbol).last_quote = (ts // MINUTE_NS, bid, ask)
        return bid, ask

    def _quote(self, symbol: str, ts: int) -> Message:
        rand = self._rng.random
        bid, ask = self._spread(symbol, ts)
        if self.asset == "crypto":
            return assetmsgs.crypto_quote(
                symbol,
                ts,
                bid=round(bid, 6),
                bid_size=round(rand() * 3, 6),
                ask=round(ask, 6),
                ask_size=round(rand() * 3, 6),
            )
        bid, ask = round(bid, 2), round(ask, 2)
        if self.asset == "option":
            return assetmsgs.option_quote(
                symbol,
                ts,
                bid=bid,
                bid_size=1 + int(rand() * 50),
                ask=ask,
                ask_size=1 + int(rand() * 50),
                exchange=self._rng.choice(OPRA_EXCHANGES),
            )
        return messages.quote(
            symbol,
            ts,
            bid_price=bid,
            bid_size=1 + int(rand() * 9),
            ask_price=ask,
            ask_size=1 + int(rand() * 9),
            bid_exchange=self._exchange(),
            ask_exchange=self._exchange(),
            tape=self._instrument(symbol).tape,
        )

    def _trade(self, symbol: str, inst: Instrument, ts: int) -> Message:
        rand = self._rng.random
        quote = inst.last_quote
        bid, ask = quote[1:] if quote and quote[0] == ts // MINUTE_NS else self._spread(symbol, ts)
        price = (bid, (bid + ask) / 2, ask)[int(rand() * 3)]
        price = round(price, 2) if self.asset != "crypto" else round(price, 6)
        trade_id = inst.next_id
        inst.next_id += 1
        if self.asset == "crypto":
            size = round(0.0001 + rand() * 0.5, 8)
            inst.last_trade = (trade_id, price, size)
            taker = "B" if rand() < 0.5 else "S"
            return assetmsgs.crypto_trade(
                symbol, ts, trade_id=trade_id, price=price, size=size, taker=taker
            )
        if self.asset == "option":
            return assetmsgs.option_trade(
                symbol,
                ts,
                price=price,
                size=1 + int(rand() * 20),
                exchange=self._rng.choice(OPRA_EXCHANGES),
                condition=self._rng.choice("ISfa"),
            )
        size = _SIZES[int(rand() * len(_SIZES))]
        inst.last_trade = (trade_id, price, size)
        return messages.trade(
            symbol,
            ts,
            trade_id=trade_id,
            price=price,
            size=size,
            exchange=self._exchange(),
            conditions=("@",),
            tape=inst.tape,
        )

    def clock_messages(self, wanted: Mapping[str, Collection[str]]) -> list[Message]:
        """Bars that fell due: ``b`` and ``d`` for each minute that ended, ``u`` half a
        minute into the next minute for a minute that got a late print."""
        if self.asset not in ("stock", "crypto"):
            return []
        now = self.now_ns()
        minute = now // MINUTE_NS
        out: list[Message] = []
        model = self.model
        for done in range(self._minute, minute):
            out += [bar_message("b", s, model.minute_bar(s, done)) for s in wanted.get("bars", ())]
            day = _day_start(now)
            for symbol in wanted.get("dailyBars", ()):
                bar = daily_bar(model, symbol, day, (done + 1) * MINUTE_NS)
                if bar is not None:
                    out.append(bar_message("d", symbol, bar))
        self._minute = max(self._minute, minute)
        due = (now - UPDATE_DELAY_NS) // MINUTE_NS  # the newest minute whose update is due
        for late in range(self._updated_minute + 1, due + 1):
            for symbol in wanted.get("updatedBars", ()):
                if model.has_update(symbol, late):
                    out.append(bar_message("u", symbol, model.updated_bar(symbol, late)))
        self._updated_minute = max(self._updated_minute, due)
        return out


def _day_start(ts_ns: int) -> int:
    """Midnight New York time of the day containing ``ts_ns`` (the daily bar's ``t``)."""
    local = datetime.fromtimestamp(ts_ns / 1e9, _new_york())
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    return int(midnight.timestamp()) * 1_000_000_000


def _new_york() -> tzinfo:
    try:
        return ZoneInfo("America/New_York")
    except ZoneInfoNotFoundError:  # no tz database installed: Eastern Standard Time
        return timezone(timedelta(hours=-5))
