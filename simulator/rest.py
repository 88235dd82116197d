"""The REST endpoints reconciliation needs, answered from the order book.

``handle`` is pure apart from reading the book: it maps a request to (status, JSON body).
Errors use Alpaca's shape, ``{"code": 40010001, "message": "..."}``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from simulator.clock import parse_time
from simulator.config import Credentials
from simulator.orderbook import OrderBook

Reply = tuple[int, Any]
_DAY_NS = 86_400_000_000_000


class _BadRequest(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _error(status: int, code: int, message: str) -> Reply:
    return status, {"code": code, "message": message}


def handle(
    method: str,
    target: str,
    headers: Mapping[str, str],
    book: OrderBook,
    credentials: Credentials,
) -> Reply:
    """Answer one REST request (``target`` is the path with its query string)."""
    if not credentials.accepts(headers.get("APCA-API-KEY-ID"), headers.get("APCA-API-SECRET-KEY")):
        return _error(401, 40110000, "request is not authorized")
    if method != "GET":
        return _error(405, 40510000, "method not allowed")
    parts = urlsplit(target)
    path = unquote(parts.path).rstrip("/")
    query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    routes: dict[str, Callable[[], Reply]] = {
        "/v2/orders": lambda: (200, _orders(book, query)),
        "/v2/orders:by_client_order_id": lambda: _by_client_id(book, query),
        "/v2/account": lambda: (200, book.account()),
        "/v2/account/activities/FILL": lambda: (200, _fills(book, query)),
    }
    try:
        if path in routes:
            return routes[path]()
        if path.startswith("/v2/orders/") and path.count("/") == 3:
            order_id = path.rsplit("/", 1)[1]
            order = book.get(order_id)
            if order is None:
                return _error(404, 40410000, f"order not found for {order_id}")
            return 200, order
    except _BadRequest as exc:
        return _error(422, 40010001, exc.message)
    return _error(404, 40410000, "endpoint not found")


def _by_client_id(book: OrderBook, query: Mapping[str, str]) -> Reply:
    client_id = query.get("client_order_id")
    if not client_id:
        raise _BadRequest("client_order_id is required")
    order = book.by_client_order_id(client_id)
    if order is None:
        return _error(404, 40410000, f"order not found for {client_id}")
    return 200, order


def _choice(query: Mapping[str, str], name: str, allowed: tuple[str, ...], default: str) -> str:
    value = query.get(name) or default
    if value not in allowed:
        raise _BadRequest(f"invalid {name}: {value!r} (one of {', '.join(allowed)})")
    return value


def _int(query: Mapping[str, str], name: str, default: int, top: int) -> int:
    text = query.get(name)
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise _BadRequest(f"invalid {name}: {text!r}") from None
    if value < 1:
        raise _BadRequest(f"{name} must be at least 1")
    return min(value, top)


def _time(query: Mapping[str, str], name: str) -> int | None:
    text = query.get(name)
    if not text:
        return None
    try:
        return parse_time(text)
    except ValueError:
        raise _BadRequest(f"invalid {name}: {text!r}") from None


def _bool(query: Mapping[str, str], name: str) -> bool:
    text = (query.get(name) or "false").lower()
    if text not in ("true", "false", "1", "0"):
        raise _BadRequest(f"invalid {name}: {text!r}")
    return text in ("true", "1")


def _orders(book: OrderBook, query: Mapping[str, str]) -> list[dict[str, Any]]:
    _bool(query, "nested")  # simple orders only: nothing to nest, but the value is checked
    side = query.get("side") or None
    if side not in (None, "buy", "sell"):
        raise _BadRequest(f"invalid side: {side!r}")
    symbols = [s for s in (query.get("symbols") or "").split(",") if s]
    return book.query(
        status=_choice(query, "status", ("open", "closed", "all"), "open"),
        after_ns=_time(query, "after"),
        until_ns=_time(query, "until"),
        limit=_int(query, "limit", 50, 500),
        direction=_choice(query, "direction", ("asc", "desc"), "desc"),
        symbols=symbols or None,
        side=side,
    )


def _fills(book: OrderBook, query: Mapping[str, str]) -> list[dict[str, Any]]:
    after, until = _time(query, "after"), _time(query, "until")
    day = _time(query, "date")
    if day is not None:
        after, until = day - 1, day + _DAY_NS - 1
    return book.fill_activities(
        after_ns=after,
        until_ns=until,
        direction=_choice(query, "direction", ("asc", "desc"), "desc"),
        page_size=_int(query, "page_size", 100, 100),
        page_token=query.get("page_token") or None,
    )
