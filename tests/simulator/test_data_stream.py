"""The market data stream, driven by the real alpaca-py StockDataStream."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from alpaca.data.live.stock import StockDataStream
from alpaca.data.models import Bar, Quote, Trade, TradeCancel, TradeCorrection, TradingStatus

from simulator import Simulator, messages
from simulator.assetmsgs import bar_message
from simulator.bars import MinuteBar
from simulator.clock import now_ns
from simulator.emitter import FramePool
from tests.harness.wait import wait_until
from tests.simulator.conftest import MARKET_CHANNELS, Running, collector, subscribe, subscribed

NS = 1_732_459_800_123_456_789  # 2024-11-24T14:50:00.123456789Z
MINUTE = NS - NS % 60_000_000_000  # the start of its minute and of its day
DAY = NS - NS % 86_400_000_000_000


def one_of_each(symbol: str = "AAPL") -> list[dict[str, Any]]:
    return [
        messages.trade(symbol, NS, trade_id=7, price=187.25, size=100, exchange="V"),
        messages.quote(symbol, NS + 1, bid_price=187.2, bid_size=3, ask_price=187.3, ask_size=5),
        bar_message("b", symbol, MinuteBar(MINUTE, 187.0, 187.5, 186.9, 187.25, 1200, 12, 187.21)),
        bar_message("u", symbol, MinuteBar(MINUTE, 187.0, 187.5, 186.9, 187.3, 1300, 13, 187.22)),
        bar_message("d", symbol, MinuteBar(DAY, 185.0, 188.0, 184.0, 187.3, 99000, 900, 186.5)),
        messages.status(
            symbol,
            NS + 2,
            status_code="H",
            status_message="Trading Halt",
            reason_code="T12",
            reason_message="Trading Halted",
        ),
        messages.correction(
            symbol,
            NS + 3,
            exchange="V",
            original=(7, 187.25, 100, ["@"]),
            corrected=(8, 187.26, 100, ["@"]),
        ),
        messages.cancel_error(symbol, NS + 4, trade_id=8, exchange="V", price=187.26, size=100),
        messages.luld(symbol, NS + 5, limit_up=196.6, limit_down=177.9, indicator="B"),
    ]


def subscribe_everything(stream: StockDataStream, handler, symbol: str = "AAPL") -> None:
    subscribe(stream, handler, (*MARKET_CHANNELS, "trading_statuses"), symbol)
    stream.register_trade_corrections(handler)
    stream.register_trade_cancels(handler)
    stream._handlers["lulds"][symbol] = handler  # 0.44 has no subscribe_lulds


def test_every_stock_message_type_parses_into_alpaca_py_models(sim: Simulator) -> None:
    received, handler = collector()
    stream = StockDataStream("key", "secret", url_override=sim.data_url)
    subscribe_everything(stream, handler)
    with Running(stream, sim, "data"):
        wait_until(lambda: subscribed(sim), message="subscribed")
        assert sim.push_market(one_of_each()) == 9
        wait_until(lambda: len(received) == 9, message="nine messages")
    trade, quote, bar, updated, daily, status, correction, cancel, luld = received
    assert isinstance(trade, Trade)
    assert trade.price == 187.25
    assert trade.size == 100
    assert trade.timestamp.microsecond == 123456  # alpaca-py keeps microseconds
    assert isinstance(quote, Quote)
    assert quote.ask_price == 187.3
    assert all(isinstance(b, Bar) for b in (bar, updated, daily))
    assert (bar.trade_count, bar.vwap, updated.volume) == (12, 187.21, 1300)
    assert isinstance(status, TradingStatus)
    assert status.status_code == "H"
    assert isinstance(correction, TradeCorrection)
    assert correction.corrected_id == 8
    assert isinstance(cancel, TradeCancel)
    assert cancel.action == "C"
    assert luld["T"] == "l"
    assert luld["u"] == 196.6


def test_raw_data_mode_gets_t_first_and_nanosecond_msgpack_timestamps(sim: Simulator) -> None:
    received, handler = collector()
    stream = StockDataStream("key", "secret", raw_data=True, url_override=sim.data_url)
    subscribe_everything(stream, handler)
    with Running(stream, sim, "data"):
        wait_until(lambda: subscribed(sim), message="subscribed")
        sim.push_market(one_of_each())
        wait_until(lambda: len(received) == 9, message="nine messages")
    assert [m["T"] for m in received] == list("tqbudscxl")
    assert all(next(iter(m)) == "T" for m in received)
    assert all(isinstance(m["t"], msgpack.Timestamp) for m in received)
    assert received[0]["t"].to_unix_nano() == NS
    assert all("n" in m and "vw" in m for m in received[2:5])


def test_only_subscribed_symbols_arrive_and_corrections_ride_on_trades(sim: Simulator) -> None:
    received, handler = collector()
    stream = StockDataStream("key", "secret", raw_data=True, url_override=sim.data_url)
    stream.subscribe_quotes(handler, "MSFT")
    stream.register_trade_corrections(handler)
    stream.register_trade_cancels(handler)
    with Running(stream, sim, "data"):
        wait_until(lambda: subscribed(sim), message="subscribed")
        assert sim.push_market(one_of_each("AAPL")) == 0  # nothing for AAPL
        sim.push_market(one_of_each("MSFT"))
        wait_until(lambda: received, message="the MSFT quote")
        assert [m["T"] for m in received] == ["q"]  # c/x need a trades subscription
        stream.subscribe_trades(handler, "MSFT")
        wait_until(lambda: sim.subscriptions()[0].get("trades") == ["MSFT"], message="trades")
        sim.push_market(one_of_each("MSFT"))
        wait_until(lambda: len(received) == 5, message="q, t, q, c, x")
    assert [m["T"] for m in received] == ["q", "t", "q", "c", "x"]


def test_subscribe_while_running_is_a_union_and_unsubscribe_a_difference(
    sim: Simulator,
) -> None:
    _, handler = collector()
    stream = StockDataStream("key", "secret", url_override=sim.data_url)
    stream.subscribe_quotes(handler, "AAPL")
    with Running(stream, sim, "data"):
        wait_until(lambda: sim.subscriptions() == [{"quotes": ["AAPL"]}], message="AAPL")
        stream.subscribe_quotes(handler, "MSFT", "SPY")
        wait_until(
            lambda: sim.subscriptions() == [{"quotes": ["AAPL", "MSFT", "SPY"]}], message="union"
        )
        stream.unsubscribe_quotes("MSFT")
        wait_until(
            lambda: sim.subscriptions() == [{"quotes": ["AAPL", "SPY"]}], message="difference"
        )


def test_synthetic_market_trades_print_inside_quotes_and_inside_their_minute_bar() -> None:
    received, handler = collector()
    with Simulator(synthetic=True, rate=3000, clock_speed=60, seed=3) as sim:
        stream = StockDataStream("key", "secret", raw_data=True, url_override=sim.data_url)
        stream.subscribe_trades(handler, "AAPL")
        stream.subscribe_quotes(handler, "AAPL")
        stream.subscribe_bars(handler, "AAPL")
        with Running(stream, sim, "data"):
            wait_until(
                lambda: sum(m["T"] == "b" for m in received) >= 2,
                timeout=15,
                message="two minute bars",
            )
    last_quote = None
    for message in received:
        if message["T"] == "q":
            last_quote = message
        elif message["T"] == "t" and last_quote is not None:
            assert last_quote["bp"] <= message["p"] <= last_quote["ap"]
    # Bars are a function of (symbol, minute) (so REST can serve them); the streamed trades
    # stay inside their minute's range.
    bar = [m for m in received if m["T"] == "b"][1]  # the first minute may predate us
    start = bar["t"].to_unix_nano()
    prices = [
        m["p"]
        for m in received
        if m["T"] == "t" and start <= m["t"].to_unix_nano() < start + 60_000_000_000
    ]
    assert prices
    assert all(bar["l"] <= p <= bar["h"] for p in prices)
    assert bar["l"] <= min(bar["o"], bar["c"]) <= max(bar["o"], bar["c"]) <= bar["h"]


def test_star_subscription_gets_the_default_universe(sim: Simulator) -> None:
    received, handler = collector()
    sim.set_market_rate(2000)
    sim.set_market(True)
    stream = StockDataStream("key", "secret", raw_data=True, url_override=sim.data_url)
    stream.subscribe_quotes(handler, "*")
    with Running(stream, sim, "data"):
        wait_until(lambda: len({m["S"] for m in received}) == 10, message="ten symbols")
    assert {m["S"] for m in received} == set(sim.config.symbols)


def test_pushed_messages_go_out_in_one_frame_per_push(sim: Simulator) -> None:
    received, handler = collector()
    stream = StockDataStream("key", "secret", raw_data=True, url_override=sim.data_url)
    stream.subscribe_trades(handler, "AAPL")
    with Running(stream, sim, "data"):
        wait_until(lambda: subscribed(sim), message="subscribed")
        batch = [
            messages.trade("AAPL", now_ns() + i, trade_id=i, price=100.0 + i, size=1)
            for i in range(1, 251)
        ]
        sim.push_market(batch)
        wait_until(lambda: len(received) == 250, message="250 trades")
        stats = sim.stats()
    assert [m["i"] for m in received] == list(range(1, 251))
    assert (stats["market_frames"], stats["market_messages"]) == (1, 250)


@pytest.mark.parametrize("restamp", [False, True])
def test_a_pool_repeats_its_frames_and_restamped_ones_carry_the_time_they_are_sent(
    restamp: bool,
) -> None:
    received, handler = collector()
    with Simulator(
        synthetic=True,
        rate=2000,
        pool=3,
        restamp=restamp,
        frame_size=10,
        mix={"t": 40, "q": 60},  # what the handlers get: no corrections or cancels
        seed=4,
    ) as sim:
        stream = StockDataStream("key", "secret", raw_data=True, url_override=sim.data_url)
        stream.subscribe_trades(handler, "AAPL")
        stream.subscribe_quotes(handler, "AAPL")
        with Running(stream, sim, "data"):
            wait_until(lambda: len(received) >= 150, timeout=15, message="five cycles")
    # Three frames of ten, drawn once, over and over (after the first frames, which may
    # come from a pool drawn for a subscription still being made).
    window = received[60:120]
    drawn = [(m["T"], m.get("p"), m.get("bp"), m.get("i")) for m in window]
    assert drawn[:30] == drawn[30:]
    times = [m["t"].to_unix_nano() for m in window]
    if restamp:
        assert times == sorted(times)
        assert len(set(times)) == 60
    else:
        assert times[:30] == times[30:]


def test_a_restamped_pool_frame_decodes_to_its_messages_at_the_new_times() -> None:
    msgs = [
        {"T": "t", "S": "AAPL", "p": 1.5, "t": msgpack.Timestamp(1, 0)},
        {"T": "s", "S": "AAPL", "sc": "H"},  # no time: left as it is
        {"T": "q", "S": "MSFT", "bp": 2, "t": msgpack.Timestamp(2, 5), "z": "C"},
    ]
    pool = FramePool((), [(msgs, {})])
    base = 1_796_000_000_999_999_999
    for at in (base, base + 1):  # the template is reused: each call stamps its own times
        decoded = msgpack.unpackb(pool.stamped(0, at), timestamp=2)
        assert decoded == [
            {**msgs[0], "t": at},
            msgs[1],
            {**msgs[2], "t": at + 2},
        ]
