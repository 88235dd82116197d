"""Pure parts: time formats, decimals, subscriptions, mix parsing, credentials."""

from __future__ import annotations

import pytest

from simulator.clock import parse_time, rfc3339, to_timestamp
from simulator.codec import ClientMessageError, decode_client, error
from simulator.config import Credentials
from simulator.faults import PeriodicFault
from simulator.market import SyntheticMarket, parse_mix
from simulator.orders import decimal_text, new_order
from simulator.subscriptions import SubscriptionError, Subscriptions


def test_rfc3339_is_go_style_nanoseconds_and_parses_back() -> None:
    assert rfc3339(1_700_000_000_123_456_789) == "2023-11-14T22:13:20.123456789Z"
    assert rfc3339(1_700_000_000_120_000_000) == "2023-11-14T22:13:20.12Z"
    assert rfc3339(1_700_000_000_000_000_000) == "2023-11-14T22:13:20Z"
    for ns in (1_700_000_000_123_456_789, 1_700_000_000_000_000_000):
        assert parse_time(rfc3339(ns)) == ns
    assert parse_time("2023-11-14T17:13:20.5-05:00") == 1_700_000_000_500_000_000
    assert parse_time("2023-11-14T22:13:20.123456+00:00") == 1_700_000_000_123_456_000
    assert parse_time("2023-11-14") == 1_699_920_000_000_000_000
    with pytest.raises(ValueError):
        parse_time("yesterday")
    assert to_timestamp(1_700_000_000_000_000_007).to_unix_nano() == 1_700_000_000_000_000_007


def test_decimals_are_plain_strings_without_float_noise() -> None:
    assert decimal_text("10.500") == "10.5"
    assert decimal_text("1E+2") == "100"
    assert decimal_text("0.000000001") == "0.000000001"
    assert decimal_text("-0") == "0"
    order = new_order(symbol="AAPL", ts_ns=1, qty="3.50", limit_price="1.10", order_type="limit")
    assert (order["qty"], order["limit_price"], order["filled_qty"]) == ("3.5", "1.1", "0")
    with pytest.raises(ValueError):
        new_order(symbol="AAPL", ts_ns=1, time_in_force="gtd")
    with pytest.raises(ValueError):
        new_order(symbol="AAPL", ts_ns=1, order_type="limit")


def test_subscriptions_union_difference_and_errors() -> None:
    subs = Subscriptions()
    subs.apply("subscribe", {"action": "subscribe", "trades": ["AAPL"], "quotes": ["*"]})
    subs.apply("subscribe", {"trades": ["MSFT", "AAPL"]})
    subs.apply("unsubscribe", {"trades": ["AAPL", "NOPE"]})
    assert subs.snapshot() == {"trades": ["MSFT"], "quotes": ["*"]}
    assert subs.wants("c", "MSFT")
    assert subs.wants("q", "ANY")
    assert not subs.wants("t", "AAPL")
    assert not subs.wants(None, "MSFT")
    for request, code in (
        ({"news": ["*"]}, 410),
        ({"corrections": ["A"]}, 410),
        ({"foo": ["A"]}, 400),
        ({"trades": [1]}, 400),
    ):
        with pytest.raises(SubscriptionError) as refused:
            subs.apply("subscribe", request)
        assert refused.value.code == code
    assert Subscriptions(test_feed=True).reply() == {
        "T": "subscription",
        "trades": [],
        "quotes": [],
        "bars": [],
    }


def test_client_messages_and_errors() -> None:
    assert decode_client('{"action": "auth"}') == {"action": "auth"}
    assert decode_client(b'{"action": "listen"}') == {"action": "listen"}
    for bad in (b"\xc1", "[]", '{"key": 1}', b"\x91\x01"):
        with pytest.raises(ClientMessageError):
            decode_client(bad)
    assert error(406) == {"T": "error", "code": 406, "msg": "connection limit exceeded"}


def test_mix_faults_and_credentials_parse_or_refuse() -> None:
    assert parse_mix("t=1, q=2") == {"t": 1.0, "q": 2.0}
    for bad in ("b=1", "t", "t=0"):
        with pytest.raises(ValueError):
            parse_mix(bad)
    assert PeriodicFault.parse("drop:2.5") == PeriodicFault("drop", 2.5)
    with pytest.raises(ValueError):
        PeriodicFault.parse("drop:never")
    assert Credentials().accepts("any", "thing")
    assert not Credentials("k", "s").accepts("k", "x")
    assert not Credentials().accepts(None, "s")


def test_market_draws_only_wanted_types_and_symbols() -> None:
    market = SyntheticMarket(mix={"t": 1, "q": 1, "s": 1}, seed=1)
    batch = market.generate(300, {"quotes": {"AAPL"}, "statuses": {"MSFT"}})
    assert {(m["T"], m["S"]) for m in batch} == {("q", "AAPL"), ("s", "MSFT")}
    stamps = [m["t"].to_unix_nano() for m in batch]
    assert stamps == sorted(stamps)
    assert len(set(stamps)) == 300
    assert market.generate(10, {}) == []
