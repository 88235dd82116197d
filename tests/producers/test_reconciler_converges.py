"""Reconciliation converges on REST: each pass compares every order that may have changed since
the last one (open in REST, submitted since the watermark, open in Redis, or found different
before) and repairs each difference older than the in-flight window; an order lost on its way
is repaired by a later pass, whether Redis ever saw it or not.

The pure decisions are fed REST payloads; the passes run against a real Redis, with REST
answered as Alpaca answers ``GET /v2/orders`` (status, ``after``/``until`` on submission time,
direction, limit; no page token), and repairs published through the real order script."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

import pytest
import redis
from alpaca.common.enums import Sort
from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import QueryOrderStatus
from alpaca.trading.requests import GetOrdersRequest

from alpaca_broker.keys import Keys
from alpaca_broker.schema import FINAL_STATUSES
from alpaca_broker.settings import Settings
from producers import order_diff, reconciliation
from producers.buffer import EventBuffer, Message
from producers.health import StreamStatus
from producers.order_diff import InFlight, judge, next_until, submitted_at
from producers.reconciliation import Reconciler
from simulator.api import Simulator
from tasks.order_events import prepare_order
from tasks.publisher import Publisher

KEYS = Keys()
T0 = datetime(2026, 11, 24, 14, 30, tzinfo=UTC)


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _order(
    order_id: str, status: str, filled: str = "0", *, submitted: float = 0, updated: float = 1
) -> dict[str, Any]:
    """An order as REST returns it, submitted and updated ``submitted``/``updated`` seconds
    after T0."""
    return {
        "id": order_id, "client_order_id": f"c-{order_id}", "symbol": "AAPL", "side": "buy",
        "qty": "2", "filled_qty": filled, "filled_avg_price": "187.5" if filled != "0" else None,
        "order_type": "market", "type": "market", "time_in_force": "day", "status": status,
        "submitted_at": _stamp(_at(submitted)), "updated_at": _stamp(_at(updated)),
    }  # fmt: skip


def _now() -> float:
    """Now, in seconds after T0 (the unit of :func:`_order`'s times)."""
    return time.time() - T0.timestamp()


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def _streamed(order: dict[str, Any], event: str) -> Message:
    """The trading stream's ``trade_updates`` data for ``order``, as the read loop notes it
    (an execution carries its own ``execution_id``)."""
    data: dict[str, Any] = {"event": event, "order": dict(order), "timestamp": order["updated_at"]}
    if event in ("fill", "partial_fill"):
        data["execution_id"] = str(uuid.uuid4())
    return Message(time.time_ns(), data)


# --- the pure decisions ----------------------------------------------------------------------


def test_judge_leaves_an_order_alone_when_redis_shows_its_rest_state() -> None:
    held = {"status": "filled", "filled_qty": "2.0"}
    assert judge(_order("a", "filled", "2"), held, InFlight()) is None


def test_judge_repairs_a_state_the_stream_never_delivered_at_once() -> None:
    verdict = judge(_order("a", "filled", "2"), {"status": "new", "filled_qty": "0"}, InFlight())
    assert verdict is not None
    assert (verdict.action, verdict.event["event"]) == ("repair", "fill")
    assert verdict.event["timestamp"] == _order("a", "filled", "2")["updated_at"]


def test_judge_repairs_an_order_redis_never_saw() -> None:
    verdict = judge(_order("a", "new"), {}, InFlight())
    assert verdict is not None
    assert (verdict.action, verdict.event["event"]) == ("repair", "new")


def test_judge_waits_while_the_streamed_state_is_in_flight_then_repairs_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    filled = _order("a", "filled", "2")
    in_flight = InFlight()
    in_flight.note(_streamed(filled, "fill"))
    verdict = judge(filled, {"status": "new", "filled_qty": "0"}, in_flight)
    assert verdict is not None
    assert verdict.action == "in_flight"
    later = time.monotonic() + order_diff.IN_FLIGHT_S
    monkeypatch.setattr(time, "monotonic", lambda: later)
    verdict = judge(filled, {"status": "new", "filled_qty": "0"}, in_flight)
    assert verdict is not None
    assert verdict.action == "repair"  # it never landed: lost on its way


def test_a_lost_state_is_repaired_within_the_contracts_three_minutes_by_default() -> None:
    # Repaired by the first pass at least IN_FLIGHT_S after the stream delivered it: at most
    # one interval later, plus the hand-off and the worker.
    interval = Settings(_env_file=None).reconcile_interval
    assert order_diff.IN_FLIGHT_S + interval <= 180 - 30


def test_done_for_day_is_open_and_the_contract_lists_the_final_statuses() -> None:
    assert frozenset({"filled", "canceled", "expired", "rejected", "replaced"}) == FINAL_STATUSES


def test_a_short_page_ends_the_newest_first_listing() -> None:
    page = [_order("a", "new", submitted=5), _order("b", "new", submitted=4)]
    assert next_until(page, False, T0) == (True, None)


def test_a_full_page_goes_on_a_microsecond_after_its_oldest_submission() -> None:
    page = [_order("a", "new", submitted=5), _order("b", "new", submitted=4)]
    done, until = next_until(page, True, T0)
    assert not done
    assert until == T0 + timedelta(seconds=4, microseconds=1)


def test_a_full_page_reaching_back_past_the_horizon_ends_the_listing() -> None:
    page = [_order("a", "new", submitted=5), _order("b", "new", submitted=-1)]
    assert next_until(page, True, T0) == (True, None)


def test_a_full_page_with_an_order_without_a_submission_time_cannot_be_paged_past() -> None:
    page = [_order("a", "new", submitted=5), {**_order("b", "new"), "submitted_at": None}]
    assert next_until(page, True, T0) == (False, None)


def test_nanosecond_and_offset_submission_times_are_read_to_the_microsecond() -> None:
    order = {"submitted_at": "2022-04-19T13:45:04.980944666-04:00"}
    assert submitted_at(order) == datetime(2022, 4, 19, 17, 45, 4, 980944, tzinfo=UTC)
    assert submitted_at({"submitted_at": "2022-04-19T13:45:04"}) is None  # no zone: not a time


# --- passes against a real Redis -------------------------------------------------------------


class AlpacaRest:
    """REST as Alpaca answers it: ``GET /v2/orders`` keeps ``status`` open/closed/all, filters
    ``after`` (exclusive) and ``until`` on ``submitted_at``, sorts by it (``direction``, newest
    first by default) and cuts at ``limit`` (50 by default); no page token. ``GET
    /v2/orders/{id}`` answers one order, 404 for an unknown one."""

    def __init__(self, *orders: dict[str, Any], until_inclusive: bool = True) -> None:
        self.orders = {o["id"]: o for o in orders}
        self.until_inclusive = until_inclusive
        self.requests: list[GetOrdersRequest] = []
        self.looked_up: list[str] = []

    def put(self, *orders: dict[str, Any]) -> None:
        self.orders.update((o["id"], o) for o in orders)

    def get_orders(self, request: GetOrdersRequest) -> list[dict[str, Any]]:
        self.requests.append(request)

        def kept(order: dict[str, Any]) -> bool:
            final = order["status"] in FINAL_STATUSES
            if (request.status == QueryOrderStatus.OPEN and final) or (
                request.status == QueryOrderStatus.CLOSED and not final
            ):
                return False
            moment = _submitted(order)
            if request.after is not None and moment <= request.after:
                return False
            if request.until is not None:
                beyond = moment > request.until if self.until_inclusive else moment >= request.until
                if beyond:
                    return False
            return True

        chosen = sorted(
            filter(kept, self.orders.values()),
            key=_submitted,
            reverse=request.direction != Sort.ASC,
        )
        return [dict(o) for o in chosen[: request.limit or 50]]

    def get_order_by_id(self, order_id: str) -> dict[str, Any]:
        self.looked_up.append(order_id)
        if order_id not in self.orders:
            body = json.dumps({"code": 40410000, "message": "order not found"})
            raise APIError(body, SimpleNamespace(response=SimpleNamespace(status_code=404)))
        return dict(self.orders[order_id])


def _submitted(order: dict[str, Any]) -> datetime:
    moment = submitted_at(order)
    assert moment is not None
    return moment


class Pipeline:
    """A reconciler, its order buffer, and the worker's side: what the buffer holds is either
    published through the real order script (``deliver``) or lost on its way (``lose``)."""

    def __init__(self, redis_url: str, client: redis.Redis) -> None:
        self.client = client
        self.buffer: EventBuffer[Message] = EventBuffer(StreamStatus("orders"), None)
        self.in_flight = InFlight()
        settings = Settings(REDIS_URL=redis_url, _env_file=None)
        self.reconciler = Reconciler(settings, self.buffer, in_flight=self.in_flight)
        self.publisher = Publisher(
            redis.Redis.from_url(redis_url), KEYS, stream_maxlen=1000, dedupe_ttl=3600
        )

    def stream(self, order: dict[str, Any], event: str) -> None:
        """The trading stream delivers ``event`` for ``order`` (read loop: noted, buffered)."""
        message = _streamed(order, event)
        self.in_flight.note(message)
        self.buffer.put(message)

    def reconcile(self, rest: AlpacaRest) -> int:
        """One pass, as its own unit would run it (the watermark moves as between passes)."""
        return self.reconciler.reconcile_once(cast(TradingClient, rest), self.client)

    def deliver(self) -> int:
        """Publish what the buffer holds, as the worker would; returns how many."""
        taken = self.buffer.take(1000)
        for message in taken:
            self.publisher.publish_order(
                prepare_order(message.payload, message.received_ns, message.source)
            )
        return len(taken)

    def lose(self) -> int:
        """Drop what the buffer holds (its tasks deleted from the queue)."""
        return len(self.buffer.take(1000))

    def held(self, order_id: str) -> tuple[str | None, str | None]:
        state = self.client.hmget(KEYS.order(order_id), "status", "filled_qty")
        return cast(tuple[str | None, str | None], tuple(state))

    def events(self, order_id: str) -> list[tuple[str, str]]:
        entries = (json.loads(f["event"]) for _, f in self.client.xrange(KEYS.orders_events))
        return [(e["event"], e["source"]) for e in entries if e["order_id"] == order_id]

    def unsettled(self) -> set[str]:
        return cast(set[str], self.client.smembers(KEYS.orders_unsettled))


@pytest.fixture
def pipeline(redis_url: str, redis_client: redis.Redis) -> Pipeline:
    return Pipeline(redis_url, redis_client)


def _later(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Move the monotonic clock (the in-flight window's) ``seconds`` on."""
    now = time.monotonic() + seconds
    monkeypatch.setattr(time, "monotonic", lambda: now)


def test_an_order_lost_soon_after_it_closed_is_repaired_once_the_window_passes(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 25, item 3: the stream delivered `new` and `fill`, both tasks were lost, and the
    # order then fell out of the listing of recent submissions (the watermark moved on).
    rest = AlpacaRest()
    pipeline.reconcile(rest)  # a fresh Redis: the watermark starts
    new = _order("lost", "new", submitted=_now() - 5, updated=_now() - 5)
    filled = {**new, "status": "filled", "filled_qty": "2", "updated_at": _stamp(_at(_now()))}
    rest.put(filled)
    pipeline.stream(new, "new")
    pipeline.stream(filled, "fill")
    assert pipeline.lose() == 2
    assert pipeline.reconcile(rest) == 0  # listed, but in flight: delivered just now
    assert pipeline.reconciler.stats.last_in_flight == 1
    assert pipeline.unsettled() == {"lost"}  # watched although Redis never saw it

    _later(monkeypatch, order_diff.IN_FLIGHT_S)
    pipeline.reconciler.stats.last_started = time.time() + 3600  # out of every listing
    assert pipeline.reconcile(rest) == 1
    assert rest.looked_up == ["lost"]  # found by its id
    pipeline.deliver()
    assert pipeline.held("lost") == ("filled", "2")
    assert pipeline.events("lost") == [("fill", "reconciliation")]

    assert pipeline.reconcile(rest) == 0
    assert pipeline.unsettled() == set()  # Redis agrees: no longer looked up
    pipeline.deliver()
    assert pipeline.events("lost") == [("fill", "reconciliation")]


def test_an_order_whose_events_are_still_queued_is_published_once_by_the_stream(
    pipeline: Pipeline,
) -> None:
    rest = AlpacaRest()
    pipeline.reconcile(rest)
    filled = _order("queued", "filled", "2", submitted=_now())
    rest.put(filled)
    pipeline.stream(_order("queued", "new"), "new")
    pipeline.stream(filled, "fill")
    assert pipeline.reconcile(rest) == 0  # both in flight: nothing added beside them
    assert pipeline.deliver() == 2
    assert pipeline.events("queued") == [("new", "stream"), ("fill", "stream")]
    assert pipeline.reconcile(rest) == 0
    assert pipeline.unsettled() == set()


def test_a_repair_lost_on_its_way_is_handed_off_again_by_the_next_pass(
    pipeline: Pipeline,
) -> None:
    rest = AlpacaRest(_order("a", "new", submitted=_now()))
    assert pipeline.reconcile(rest) == 1  # open in REST, never seen by Redis
    rest.put(_order("a", "filled", "2", updated=_now()))
    pipeline.lose()
    pipeline.reconciler.stats.last_started = time.time() + 3600  # out of every listing
    assert pipeline.reconcile(rest) == 1
    assert rest.looked_up == ["a"]
    pipeline.deliver()
    assert pipeline.held("a") == ("filled", "2")
    assert pipeline.events("a") == [("fill", "reconciliation")]


def test_a_done_for_day_order_stays_watched_and_a_later_fill_is_repaired(
    pipeline: Pipeline,
) -> None:
    # Issue 25, item 4: done_for_day is open; a fill during a trading-stream outage, on an
    # order submitted long before the watermark, is found through the open-order index.
    rest = AlpacaRest()
    pipeline.reconcile(rest)
    day = _order("gtc", "done_for_day", "1", submitted=-86400)
    pipeline.stream(day, "done_for_day")
    pipeline.deliver()
    assert pipeline.client.ttl(KEYS.order("gtc")) == -1  # an open order's hash never expires
    assert pipeline.client.sismember(KEYS.orders_open, "gtc")
    rest.put(_order("gtc", "filled", "2", submitted=-86400, updated=5))  # REST only
    assert pipeline.reconcile(rest) == 1
    assert rest.looked_up == ["gtc"]
    pipeline.deliver()
    assert pipeline.held("gtc") == ("filled", "2")
    assert pipeline.events("gtc") == [("done_for_day", "stream"), ("fill", "reconciliation")]


@pytest.mark.parametrize("until_inclusive", [True, False], ids=["until-inclusive", "exclusive"])
def test_every_order_submitted_since_the_watermark_is_listed_newest_first_across_pages(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch, until_inclusive: bool
) -> None:
    monkeypatch.setattr(reconciliation, "PAGE", 3)
    base = _now() - 30
    # Closed orders (no open listing shows them), two pairs sharing an instant, one older
    # than the watermark's margin (never asked for).
    times = [base + 1, base + 2, base + 2, base + 3, base + 4, base + 4, base + 5]
    orders = [_order(f"o{i}", "canceled", submitted=t, updated=t) for i, t in enumerate(times)]
    old = _order("old", "canceled", submitted=base - 3600, updated=base - 3600)
    rest = AlpacaRest(*orders, old, until_inclusive=until_inclusive)
    pipeline.client.set(KEYS.orders_reconciled_at, repr(time.time() - 60))
    assert pipeline.reconcile(rest) == len(orders)
    found = {m.payload["order"]["id"] for m in pipeline.buffer.take(100)}
    assert found == {o["id"] for o in orders}  # not the old one
    assert pipeline.reconciler.complete
    listing = [r for r in rest.requests if r.status == QueryOrderStatus.ALL]
    assert all(r.direction == Sort.DESC and r.after is not None for r in listing)
    assert listing[0].until is None
    assert len(listing) == 5  # pages overlap by the instant they share


def test_a_listing_that_cannot_finish_is_an_incomplete_pass_that_keeps_the_watermark(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reconciliation, "PAGE", 2)
    monkeypatch.setattr(reconciliation, "MAX_PAGES", 2)
    base = _now() - 30
    rest = AlpacaRest(*(_order(f"o{i}", "filled", "2", submitted=base + i) for i in range(10)))
    pipeline.client.set(KEYS.orders_reconciled_at, "1764000000.0")
    assert pipeline.reconcile(rest) == 3  # the newest pages: what it read is still repaired
    assert not pipeline.reconciler.complete
    pipeline.reconcile(rest)
    assert pipeline.client.get(KEYS.orders_reconciled_at) == "1764000000.0"


def test_a_watched_order_rest_no_longer_knows_leaves_the_watch_without_a_hash_made(
    pipeline: Pipeline,
) -> None:
    pipeline.client.sadd(KEYS.orders_unsettled, "ghost")
    rest = AlpacaRest()
    pipeline.reconcile(rest)
    assert rest.looked_up == ["ghost"]
    assert pipeline.unsettled() == set()
    assert not pipeline.client.exists(KEYS.order("ghost"))
    assert pipeline.reconciler.stats.skipped == 1


def test_a_pass_records_when_it_ran_how_many_orders_it_checked_and_repaired(
    pipeline: Pipeline,
) -> None:
    now = _now()
    rest = AlpacaRest(_order("seen", "new", submitted=now), _order("unseen", "new", submitted=now))
    pipeline.client.hset(KEYS.order("seen"), mapping={"status": "new", "filled_qty": "0"})
    before = time.time()
    pipeline.reconcile(rest)
    stats = pipeline.reconciler.stats.snapshot()
    assert stats["last_pass_at"] >= before
    assert (stats["last_checked"], stats["last_repaired"], stats["last_in_flight"]) == (2, 1, 0)
    assert "last_started" not in stats


def test_a_pass_against_the_simulator_rest_api_pages_through_every_recent_order(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reconciliation, "PAGE", 4)
    with Simulator() as sim:
        pipeline.client.set(KEYS.orders_reconciled_at, repr(time.time()))
        ids = [sim.orders.submit("AAPL", qty="1", events=())["id"] for _ in range(11)]
        for order_id in ids[:7]:
            sim.orders.fill(order_id)
        rest = TradingClient("key", "secret", raw_data=True, url_override=sim.rest_url)
        found = pipeline.reconciler.reconcile_once(rest, pipeline.client)
        assert found == 11
        assert pipeline.reconciler.complete
        pipeline.deliver()
        for order_id in ids:
            book = sim.orders.get(order_id)
            assert book is not None
            assert pipeline.held(order_id) == (book["status"], book["filled_qty"])
        assert pipeline.reconciler.reconcile_once(rest, pipeline.client) == 0
        assert pipeline.unsettled() == set()
