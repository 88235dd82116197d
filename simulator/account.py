"""The account and its fill activities as Alpaca's REST API returns them. Pure functions."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from simulator.clock import rfc3339
from simulator.orders import Order, decimal_text


def account(
    account_id: str,
    created_ns: int,
    cash: Decimal,
    positions: Mapping[str, Decimal],
    prices: Mapping[str, Decimal],
) -> dict[str, Any]:
    """``GET /v2/account`` for ``cash`` and ``positions`` valued at ``prices``."""
    long_value = sum((q * prices[s] for s, q in positions.items() if q > 0), Decimal(0))
    short_value = sum((q * prices[s] for s, q in positions.items() if q < 0), Decimal(0))
    equity = cash + long_value + short_value
    money = decimal_text
    return {
        "id": account_id,
        "account_number": "PA3SIMULATOR",
        "status": "ACTIVE",
        "crypto_status": "ACTIVE",
        "currency": "USD",
        "buying_power": money(cash),
        "regt_buying_power": money(cash),
        "daytrading_buying_power": "0",
        "non_marginable_buying_power": money(cash),
        "options_buying_power": money(cash),
        "cash": money(cash),
        "accrued_fees": "0",
        "pending_transfer_in": "0",
        "pending_transfer_out": "0",
        "portfolio_value": money(equity),
        "pattern_day_trader": False,
        "trading_blocked": False,
        "transfers_blocked": False,
        "account_blocked": False,
        "created_at": rfc3339(created_ns),
        "trade_suspended_by_user": False,
        "multiplier": "1",
        "shorting_enabled": False,
        "equity": money(equity),
        "last_equity": money(equity),
        "long_market_value": money(long_value),
        "short_market_value": money(short_value),
        "position_market_value": money(long_value - short_value),
        "initial_margin": "0",
        "maintenance_margin": "0",
        "last_maintenance_margin": "0",
        "sma": "0",
        "daytrade_count": 0,
        "options_approved_level": 0,
        "options_trading_level": 0,
    }


def activity_id(ts_ns: int) -> str:
    """A FILL activity id, ``YYYYMMDDhhmmssmmm::<uuid>`` (usable as a ``page_token``)."""
    moment = datetime.fromtimestamp(ts_ns // 1_000_000_000, UTC).strftime("%Y%m%d%H%M%S")
    return f"{moment}{ts_ns // 1_000_000 % 1000:03d}::{uuid.uuid4()}"


def fill_activity(
    order: Order, event: str, ts_ns: int, price: Decimal, qty: Decimal, leaves: Decimal
) -> dict[str, Any]:
    """The ``FILL`` activity one execution of ``order`` leaves (``event``: fill/partial_fill)."""
    return {
        "id": activity_id(ts_ns),
        "activity_type": "FILL",
        "transaction_time": rfc3339(ts_ns),
        "type": event,
        "price": decimal_text(price),
        "qty": decimal_text(qty),
        "side": order["side"],
        "symbol": order["symbol"],
        "leaves_qty": decimal_text(leaves),
        "order_id": order["id"],
        "cum_qty": order["filled_qty"],
        "order_status": order["status"],
    }
