"""The stock stream's occasional messages: trading statuses, LULD bands, trade corrections
and cancel errors, drawn for a symbol around its last trade."""

from __future__ import annotations

import random
from dataclasses import dataclass

from simulator import messages
from simulator.codec import Message

_STATUSES = (
    ("H", "Trading Halt", "T12", "Trading Halted; For information requested by NASDAQ"),
    ("T", "Trading Resumption", "T1", "Halt News Pending"),
    ("Q", "Quotation Resumption", "T2", "Halt News Dissemination"),
    ("P", "Volatility Trading Pause", "LUDP", "Volatility Trading Pause"),
)


@dataclass
class Instrument:
    """What the stream remembers of one symbol between messages."""

    tape: str
    next_id: int = 1
    last_trade: tuple[int, float, float] | None = None
    #: The last quote's minute, bid and ask: trades print at its bid, midpoint or ask.
    last_quote: tuple[int, float, float] | None = None


def draw_stock(
    kind: str, symbol: str, inst: Instrument, ts: int, mid: float, rng: random.Random, exchange: str
) -> Message:
    """A status ``s``, LULD ``l``, correction ``c`` or cancel error ``x`` (``c``/``x`` need
    a trade to refer to: the caller checks ``inst.last_trade``)."""
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
            limit_up=round(mid * 1.05, 2),
            limit_down=round(mid * 0.95, 2),
            indicator="B",
            tape=inst.tape,
        )
    assert inst.last_trade is not None
    trade_id, price, size = inst.last_trade
    if kind == "c":
        new_id = inst.next_id
        inst.next_id += 1
        fixed = round(price + rng.choice((-0.01, 0.01)), 2)
        return messages.correction(
            symbol,
            ts,
            exchange=exchange,
            original=(trade_id, price, int(size), ["@"]),
            corrected=(new_id, fixed, int(size), ["@"]),
            tape=inst.tape,
        )
    return messages.cancel_error(
        symbol,
        ts,
        trade_id=trade_id,
        exchange=exchange,
        price=price,
        size=int(size),
        action="C",
        tape=inst.tape,
    )
