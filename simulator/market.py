"""The synthetic market: random-walk prices with consistent quotes, trades and bars.

No I/O. The emitter asks it for ``generate(count, wanted)`` messages and for the bars that
fall due on its clock (``clock_messages``). Quotes move the midpoint by a random walk, trades
print at the current bid, ask or midpoint, and minute, daily and updated bars aggregate the
trades that were generated.
"""

from __future__ import annotations

import random
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from simulator import messages
from simulator.codec import Message

DEFAULT_UNIVERSE = ("AAPL", "MSFT", "AMZN", "NVDA", "GOOGL", "META", "TSLA", "AMD", "SPY", "QQQ")
#: Relative weights of the randomly drawn types; bars (b, d, u) follow the clock instead.
DEFAULT_MIX: Mapping[str, float] = {"t": 40, "q": 55, "s": 1, "l": 2, "c": 1, "x": 1}
DRAWN_TYPES = frozenset("tqslcx")
_MINUTE = 60_000_000_000
_SIZES = (1, 5, 10, 50, 100, 100, 200, 500)
_STATUSES = (
    ("H", "Trading Halt", "T12", "Trading Halted; For information requested by NASDAQ"),
    ("T", "Trading Resumption", "T1", "Halt News Pending"),
    ("Q", "Quotation Resumption", "T2", "Halt News Dissemination"),
    ("P", "Volatility Trading Pause", "LUDP", "Volatility Trading Pause"),
)


@dataclass
class _Agg:
    """Open/high/low/close/volume/count/price-volume of one bar."""

    start_ns: int
    o: float = 0.0
    h: float = 0.0
    low: float = 0.0
    c: float = 0.0
    v: int = 0
    n: int = 0
    pv: float = 0.0

    def add(self, price: float, size: int) -> None:
        if not self.n:
            self.o = self.h = self.low = price
        elif price > self.h:
            self.h = price
        elif price < self.low:
            self.low = price
        self.c = price
        self.v += size
        self.n += 1
        self.pv += price * size

    def message(self, kind: str, symbol: str) -> Message:
        return messages.bar(
            kind,
            symbol,
            self.start_ns,
            open_=self.o,
            high=self.h,
            low=self.low,
            close=self.c,
            volume=self.v,
            trade_count=self.n,
            vwap=round(self.pv / self.v, 6),
        )


@dataclass
class _Instrument:
    # Prices are whole cents, so every printed price is exact to the cent without rounding.
    cents: int
    tape: str
    anchor: int = 0  # the walk is pulled gently back towards this
    tick: int = 1  # half the spread
    next_id: int = 1
    last_trade: tuple[int, float, int] | None = None
    minute: _Agg | None = None
    previous: _Agg | None = None
    day: _Agg | None = None
    conditions: list[str] = field(default_factory=lambda: ["@"])


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
    """Random-walk instruments; every symbol asked for gets one on first use."""

    def __init__(
        self,
        *,
        mix: Mapping[str, float] = DEFAULT_MIX,
        sip: bool = False,
        seed: int | None = None,
        clock_speed: float = 1.0,
    ) -> None:
        self._rng = random.Random(seed)
        self._mix = {k: float(v) for k, v in mix.items() if v > 0}
        self._sip = sip
        self._speed = clock_speed
        self._epoch_ns = time.time_ns()
        self._mono0 = time.monotonic_ns()
        self._last_ns = 0
        self._instruments: dict[str, _Instrument] = {}
        self._minute = self.now_ns() // _MINUTE
        self._half_done = False

    def now_ns(self) -> int:
        """The market clock (wall time, sped up by ``clock_speed``), strictly increasing."""
        elapsed = time.monotonic_ns() - self._mono0
        now = self._epoch_ns + int(elapsed * self._speed)
        self._last_ns = max(now, self._last_ns + 1)
        return self._last_ns

    def mid(self, symbol: str) -> float | None:
        """The current midpoint of ``symbol``, or None if the market has not drawn it yet."""
        inst = self._instruments.get(symbol)
        return inst.cents / 100 if inst else None

    def _instrument(self, symbol: str) -> _Instrument:
        inst = self._instruments.get(symbol)
        if inst is None:
            seed = sum(map(ord, symbol))
            cents = 2000 + (seed * 7919) % 48000
            inst = _Instrument(cents, "ABC"[seed % 3], cents, max(1, cents // 5000))
            self._instruments[symbol] = inst
        return inst

    def generate(self, count: int, wanted: Mapping[str, Collection[str]]) -> list[Message]:
        """``count`` drawn messages for the wanted channel -> symbols (no ``*``; resolved).

        Trades are drawn for symbols wanted on any bar channel too, so their bars have
        something to aggregate.
        """
        pools = self._pools(wanted)
        kinds = [k for k in self._mix if pools.get(k)]
        if not kinds or count <= 0:
            return []
        rand = self._rng.random
        drawn = self._rng.choices(kinds, weights=[self._mix[k] for k in kinds], k=count)
        base = self.now_ns()
        out: list[Message] = []
        append = out.append
        instruments = self._instruments
        for offset, kind in enumerate(drawn):
            pool = pools[kind]
            symbol = pool[int(rand() * len(pool))]
            inst = instruments.get(symbol) or self._instrument(symbol)
            if kind == "q":
                append(self._quote(symbol, inst, base + offset))
            elif kind == "t":
                append(self._trade(symbol, inst, base + offset))
            else:
                append(self._draw(kind, symbol, inst, base + offset))
        self._last_ns = base + count
        return out

    def _pools(self, wanted: Mapping[str, Collection[str]]) -> dict[str, list[str]]:
        traded = set(wanted.get("trades", ()))
        for channel in ("bars", "updatedBars", "dailyBars"):
            traded.update(wanted.get(channel, ()))
        return {
            "t": sorted(traded),
            "q": sorted(wanted.get("quotes", ())),
            "s": sorted(wanted.get("statuses", ())),
            "l": sorted(wanted.get("lulds", ())),
            "c": sorted(wanted.get("trades", ())),
            "x": sorted(wanted.get("trades", ())),
        }

    def _exchange(self) -> str:
        if not self._sip:
            return "V"
        return messages.EXCHANGES[int(self._rng.random() * len(messages.EXCHANGES))]

    def _quote(self, symbol: str, inst: _Instrument, ts: int) -> Message:
        """Move the midpoint one random step and quote around it."""
        rand = self._rng.random
        step = int((rand() - 0.5) * 4 * inst.tick) + (inst.anchor - inst.cents) // 2048
        inst.cents = max(inst.cents + step, 2 * inst.tick + 1)
        return messages.quote(
            symbol,
            ts,
            bid_price=(inst.cents - inst.tick) / 100,
            bid_size=1 + int(rand() * 9),
            ask_price=(inst.cents + inst.tick) / 100,
            ask_size=1 + int(rand() * 9),
            bid_exchange=self._exchange(),
            ask_exchange=self._exchange(),
            tape=inst.tape,
        )

    def _draw(self, kind: str, symbol: str, inst: _Instrument, ts: int) -> Message:
        rng = self._rng
        if kind in "cx" and inst.last_trade is None:
            return self._trade(symbol, inst, ts)  # nothing to correct or cancel yet
        if kind == "s":
            code, text, reason, reason_text = rng.choice(_STATUSES)
            return messages.status(
                symbol,
                ts,
                status_code=code,
                status_message=text,
                reason_code=reason,
                reason_message=reason_text,
                tape=inst.tape,
            )
        if kind == "l":
            return messages.luld(
                symbol,
                ts,
                limit_up=inst.cents * 105 // 100 / 100,
                limit_down=inst.cents * 95 // 100 / 100,
                indicator="B",
                tape=inst.tape,
            )
        assert inst.last_trade is not None
        trade_id, price, size = inst.last_trade
        exchange = self._exchange()
        if kind == "c":
            new_id = inst.next_id
            inst.next_id += 1
            fixed = round(price + rng.choice((-0.01, 0.01)), 2)
            return messages.correction(
                symbol,
                ts,
                exchange=exchange,
                original=(trade_id, price, size, ["@"]),
                corrected=(new_id, fixed, size, ["@"]),
                tape=inst.tape,
            )
        return messages.cancel_error(
            symbol,
            ts,
            trade_id=trade_id,
            exchange=exchange,
            price=price,
            size=size,
            action="C",
            tape=inst.tape,
        )

    def _trade(self, symbol: str, inst: _Instrument, ts: int) -> Message:
        rand = self._rng.random
        price = (inst.cents + inst.tick * (int(rand() * 3) - 1)) / 100  # bid, mid or ask
        size = _SIZES[int(rand() * len(_SIZES))]
        trade_id = inst.next_id
        inst.next_id += 1
        inst.last_trade = (trade_id, price, size)
        start = ts - ts % _MINUTE
        if inst.minute is None or inst.minute.start_ns != start:
            inst.minute = _Agg(start)
        inst.minute.add(price, size)
        if inst.day is None:
            inst.day = _Agg(_day_start(ts))
        inst.day.add(price, size)
        return messages.trade(
            symbol,
            ts,
            trade_id=trade_id,
            price=price,
            size=size,
            exchange=self._exchange(),
            conditions=inst.conditions,
            tape=inst.tape,
        )

    def clock_messages(self, wanted: Mapping[str, Collection[str]]) -> list[Message]:
        """Bars that fell due: ``b`` and ``d`` after each minute mark, ``u`` after the
        half-minute mark when a late trade arrived for the minute before."""
        now = self.now_ns()
        minute = now // _MINUTE
        out: list[Message] = []
        if minute != self._minute:
            self._minute, self._half_done = minute, False
            for symbol, inst in self._instruments.items():
                done = inst.minute
                if done is None or done.start_ns >= minute * _MINUTE:
                    continue
                inst.previous, inst.minute = done, None
                if symbol in wanted.get("bars", ()):
                    out.append(done.message("b", symbol))
                if inst.day is not None and symbol in wanted.get("dailyBars", ()):
                    out.append(inst.day.message("d", symbol))
        elif not self._half_done and now % _MINUTE >= _MINUTE // 2:
            self._half_done = True
            for symbol in wanted.get("updatedBars", ()):
                known = self._instruments.get(symbol)
                if known is None or known.previous is None or self._rng.random() > 0.3:
                    continue
                late = known.previous
                late.add(late.c, self._rng.choice((1, 10, 100)))  # a late print at the close
                out.append(late.message("u", symbol))
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
