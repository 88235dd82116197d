"""``alpaca-broker health``: Redis, queues, producers and workers; exit 0 healthy, 1 not."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import redis
from kombu.exceptions import OperationalError

from alpaca_broker.errors import ConfigError
from alpaca_broker.health_sentinel import collect_sentinel, render_sentinel, sentinel_problems
from alpaca_broker.keys import ORDERS_QUEUE, PRICES_QUEUE, QUEUES, Keys
from alpaca_broker.redis_client import connect, describe, from_url, reason
from alpaca_broker.settings import Settings, exit_on_config_error, load_settings
from alpaca_broker.universe import refusal_line

# kombu's Redis transport: priority sub-lists of a queue, and its in-flight bookkeeping.
PRIORITY_SEP, PRIORITY_STEPS = "\x06\x16", (3, 6, 9)
UNACKED, UNACKED_INDEX = "unacked", "unacked_index"
NEAR_VISIBILITY = 0.8  # an unacked message this old will soon be delivered a second time
NEAR_MAXMEMORY = 0.8  # past this share of maxmemory, a full Redis (refused writes) is near


def collect_redis(client: redis.Redis) -> dict[str, Any]:
    """PING latency and the INFO fields an operator of a broker watches."""
    client.ping()  # connect first: the latency below is one round trip
    began = time.perf_counter()
    client.ping()
    latency_ms = (time.perf_counter() - began) * 1000
    info = client.info()
    return {
        "ping_ms": round(latency_ms, 3),
        "version": info.get("redis_version"),
        "used_memory": info.get("used_memory"),
        "maxmemory": info.get("maxmemory"),
        # 0 means no limit: the memory check is skipped, and the report says so.
        "memory_limit": "maxmemory" if info.get("maxmemory") else "none (not checked)",
        "maxmemory_policy": info.get("maxmemory_policy"),
        "aof_enabled": bool(info.get("aof_enabled")),
        "aof_last_write_status": info.get("aof_last_write_status"),
        "connected_clients": info.get("connected_clients"),
    }


def broker_clients(settings: Settings, output: redis.Redis) -> dict[str, redis.Redis]:
    """Queue -> the Redis it lives in: the output Redis (``output``) unless
    ``CELERY_BROKER_URL`` names another, and prices' own broker when they have one."""
    options: dict[str, Any] = {
        "decode_responses": True,
        "socket_timeout": 3,
        "socket_connect_timeout": 3,
    }  # as main's client of the output Redis
    broker = output
    if not settings.broker_is_output:
        broker = from_url(settings, settings.broker_url, **options)
    prices = broker
    if settings.prices_broker_apart:
        prices = from_url(settings, str(settings.celery_prices_broker_url), **options)
    return {PRICES_QUEUE: prices, ORDERS_QUEUE: broker}


def _depth(client: redis.Redis, queue: str) -> int:
    pipe = client.pipeline(transaction=False)
    for name in (queue, *(f"{queue}{PRIORITY_SEP}{step}" for step in PRIORITY_STEPS)):
        pipe.llen(name)
    return sum(pipe.execute())


def collect_queues(
    client: redis.Redis, brokers: dict[str, redis.Redis] | None = None
) -> dict[str, Any]:
    """Depth of each queue (with priority sub-lists) and the unacknowledged messages, read
    from ``client``, or from each queue's broker in ``brokers`` (:func:`broker_clients`).
    Unacknowledged tasks are the orders broker's: price acks live in the workers."""
    brokers = brokers or {}
    depths = {queue: _depth(brokers.get(queue, client), queue) for queue in QUEUES}
    pipe = brokers.get(ORDERS_QUEUE, client).pipeline(transaction=False)
    pipe.zcard(UNACKED_INDEX)
    pipe.zrange(UNACKED_INDEX, 0, 0, withscores=True)
    unacked, oldest = pipe.execute()
    return {
        "depth": depths,
        "unacked": unacked,
        "oldest_unacked_age_s": round(time.time() - oldest[0][1], 1) if oldest else None,
    }


def collect_producers(client: redis.Redis, keys: Keys) -> dict[str, Any]:
    """Every producer heartbeat that has not expired, by name."""
    prefix = keys.producer_health("")
    found: dict[str, Any] = {}
    for key in client.scan_iter(match=keys.producer_health_pattern, count=100):
        raw = client.get(key)
        if raw:
            found[key[len(prefix) :]] = json.loads(raw)
    return found


PRICE_LAG_LIMIT_S = 10.0  # price batches expire after 30 s; this much lag is falling behind


def collect_price_lag(client: redis.Redis, keys: Keys, now_ns: int) -> dict[str, Any]:
    """The last price batch the workers published: how long ago, and how old its events were
    (a queue's depth says nothing on a prefork pool, which holds what it took)."""
    raw = client.hgetall(keys.prices_published)
    if not raw:
        return {}
    return {
        "published_ago_s": round((now_ns - int(raw["at_ns"])) / 1e9, 3),
        "oldest_age_s": round(int(raw["oldest_age_ns"]) / 1e9, 3),
        "newest_age_s": round(int(raw["newest_age_ns"]) / 1e9, 3),
        "events": int(raw["events"]),
    }


def collect_dead_letters(client: redis.Redis, keys: Keys) -> dict[str, Any]:
    """The dead-letter stream ``P:orders:dead``: how many order and news tasks the workers
    could never publish, and the newest one's ``reason`` and ``task``."""
    name = keys.orders_dead_letter
    count = int(client.xlen(name))
    doc: dict[str, Any] = {"key": name, "count": count, "newest_reason": None, "newest_task": None}
    if count:
        newest = client.xrevrange(name, count=1)
        if newest:
            entry_id, fields = newest[0]
            doc.update(
                newest_id=entry_id,
                newest_reason=fields.get("reason"),
                newest_task=fields.get("task"),
            )
    return doc


def reconciliation_passes(producers: dict[str, Any], now: float) -> dict[str, Any]:
    """Each reconciling producer's last pass (pure): when it ended (and how long ago), how many
    orders it compared with Redis, how many it repaired, how many it left in flight to the
    stream, beside the running totals of its heartbeat's ``reconciliation``."""
    passes: dict[str, Any] = {}
    for name, doc in producers.items():
        stats = doc.get("reconciliation")
        if not isinstance(stats, dict):
            continue
        at = stats.get("last_pass_at")
        passes[name] = {
            "last_pass_at": at,
            "last_pass_age_s": round(now - at, 1) if isinstance(at, int | float) else None,
            "checked": stats.get("last_checked"),
            "repaired": stats.get("last_repaired"),
            "in_flight": stats.get("last_in_flight"),
            "runs": stats.get("runs"),
            "recovered": stats.get("recovered"),
            "failures": stats.get("failures"),
        }
    return passes


def collect_leases(
    client: redis.Redis, keys: Keys, producers: dict[str, Any], expected: str | None
) -> dict[str, Any]:
    """Each lease's holder (the lease key's JSON, ``None`` when nobody holds it) and the
    producers that report it as standbys. The leases are those the producers' heartbeats
    name, those with a key, and ``PRODUCER_LEASE`` of this process."""
    names = {doc["lease"] for doc in producers.values() if doc.get("lease")}
    names |= {expected} if expected else set()
    prefix = keys.lease("")
    names |= {key[len(prefix) :] for key in client.scan_iter(match=f"{prefix}*", count=100)}
    leases: dict[str, Any] = {}
    for name in sorted(names):
        raw = client.get(keys.lease(name))
        holder = json.loads(raw) if raw else None
        if holder:
            holder.pop("token", None)
        standbys = sorted(
            p
            for p, doc in producers.items()
            if doc.get("lease") == name and doc.get("role") == "standby"
        )
        leases[name] = {"holder": holder, "standbys": standbys}
    return leases


def collect_workers(app: Any, timeout: float) -> dict[str, list[str]]:
    """Worker name -> the queues it consumes, for every worker that answered (none when the
    broker is unreachable: :func:`collect_queues` names it)."""
    try:
        answers = app.control.inspect(timeout=timeout).active_queues() or {}
    except OperationalError:
        return {}
    return {worker: sorted(q["name"] for q in queues) for worker, queues in answers.items()}


def required_producers(settings: Settings, given: list[str] | None) -> list[str] | None:
    """The producer names whose heartbeat must be live and running (pure).

    The ``--producer`` names when given, else ``PRODUCER_NAME`` when it was set explicitly
    (environment or ``.env``). When neither was, None: any one running producer will do, so
    that a deployment whose producers have names of their own is not checked for a producer
    named ``default``.
    """
    if given:
        return given
    if "producer_name" in settings.model_fields_set:
        return [settings.producer_name]
    return None


def problems(report: dict[str, Any], settings: Settings, expected: list[str] | None) -> list[str]:
    """Why the system is unhealthy (empty when healthy); pure, over a collected report.

    ``expected``: the producers that must be running (:func:`required_producers`); None
    asks for at least one running producer, whatever its name.
    """
    found: list[str] = []
    if "error" in report["redis"]:
        return [f"redis unreachable: {report['redis']['error']}"]
    used, limit = report["redis"].get("used_memory") or 0, report["redis"].get("maxmemory") or 0
    if limit and used >= NEAR_MAXMEMORY * limit:
        found.append(
            f"redis memory near its limit: used_memory {used} is {used / limit:.0%} of maxmemory "
            f"{limit} (at the limit writes are refused: docs/deployment.md, sizing Redis memory)"
        )
    producers = report["producers"]
    if expected is None and not any(d.get("status") == "running" for d in producers.values()):
        found.append(
            "no producer running: no live heartbeat with status running "
            "(PRODUCER_NAME is not set, so a producer of any name counts)"
        )
    for name in expected or []:
        if name not in producers:
            found.append(f"producer {name!r}: no heartbeat (stopped, or its key expired)")
        elif producers[name].get("status") != "running":
            found.append(f"producer {name!r}: {producers[name].get('status')} (its last heartbeat)")
    for name, doc in producers.items():
        for stream, state in doc.get("streams", {}).items():
            if state.get("state") == "auth_failed":
                found.append(f"producer {name!r}: stream {stream} rejected by Alpaca (auth_failed)")
    for lease, doc in report.get("leases", {}).items():
        holder = (doc["holder"] or {}).get("holder")
        if holder is None:
            found.append(f"lease {lease!r}: no holder (no producer holds Alpaca's connections)")
        elif holder not in producers:
            found.append(f"lease {lease!r}: holder {holder!r} has no live heartbeat")
    found += _stale_reconciliation(producers, settings.reconcile_interval, time.time())
    found += subscription_refusals(producers)
    found += unfilled_gaps(producers, time.time())
    dead = report.get("dead_letters") or {}
    if dead.get("count"):
        found.append(
            f"dead letters: {dead['count']} order/news task(s) that can never be published in "
            f"{dead.get('key')} (newest reason: {dead.get('newest_reason')}); read them "
            f"(XRANGE), fix the cause, then delete them (XDEL)"
        )
    lag = report.get("price_lag") or {}
    if lag.get("oldest_age_s", 0) > PRICE_LAG_LIMIT_S:
        found.append(
            f"price workers lag: the last batch published events {lag['oldest_age_s']:.1f}s "
            f"after they were read (more price workers, or a stalled pool)"
        )
    if "error" in report["queues"]:  # a broker of its own (CELERY_*BROKER_URL), unreachable
        found.append(report["queues"]["error"])
    age = report["queues"].get("oldest_unacked_age_s")
    if age is not None and age >= NEAR_VISIBILITY * settings.visibility_timeout:
        found.append(
            f"oldest unacknowledged task is {age:.0f}s old (visibility timeout "
            f"{settings.visibility_timeout}s): a worker died or is stuck"
        )
    served = {q for queues in report["workers"].values() for q in queues}
    for queue in QUEUES:
        if queue not in served:
            found.append(f"no worker consumes queue {queue!r}")
    return found


STALE_RECONCILE_INTERVALS = 3


def _stale_reconciliation(producers: dict[str, Any], interval: float, now: float) -> list[str]:
    """Active producers whose order reconciliation has not succeeded for several intervals."""
    found: list[str] = []
    limit = STALE_RECONCILE_INTERVALS * interval + 30  # a pass may take a while
    for name, doc in producers.items():
        stats = doc.get("reconciliation")
        if not stats or doc.get("role") == "standby":
            continue
        last = stats.get("last_success_at")
        if (last is None and stats.get("failures", 0) >= STALE_RECONCILE_INTERVALS) or (
            last is not None and now - last > limit
        ):
            found.append(
                f"producer {name!r}: order reconciliation has not succeeded for "
                f"{STALE_RECONCILE_INTERVALS} intervals ({stats.get('failures')} failures, last "
                f"error: {stats.get('last_error')})"
            )
    return found


GAP_UNFILLED_LIMIT_S = 600.0
"""Seconds a bar gap may stay open before ``health`` is unhealthy: a gap is fetched within
seconds of the historical API answering (a 7-day backfill of 40 symbols takes about a minute:
docs/performance.md), so ten minutes means the API has failed that long."""


def unfilled_gaps(producers: dict[str, Any], now: float) -> list[str]:
    """Active producers with a bar gap open longer than GAP_UNFILLED_LIMIT_S (pure): each
    stream's ``backfill.gaps`` in the heartbeat, from its gap ledger ``P:meta:gaps:{STREAM}``."""
    found: list[str] = []
    for name, doc in producers.items():
        if doc.get("role") == "standby":
            continue
        for stream, state in doc.get("streams", {}).items():
            backfill = state.get("backfill") or {}
            gaps = backfill.get("gaps") or {}
            opened = gaps.get("oldest_opened_at")
            if isinstance(opened, int | float) and now - opened > GAP_UNFILLED_LIMIT_S:
                found.append(
                    f"producer {name!r}: stream {stream} has {gaps.get('open')} bar gap(s) of "
                    f"{gaps.get('symbols')} symbol(s) open, the oldest for {now - opened:.0f}s "
                    f"(from {gaps.get('oldest_from')}; last error: {backfill.get('last_error')})"
                )
    return found


def subscription_refusals(producers: dict[str, Any]) -> list[str]:
    """Active producers whose market-data stream Alpaca refused part of the universe (pure):
    each refusal in the heartbeat's ``subscriptions`` (``producers.universe``), with Alpaca's
    code and message. The stream stays connected; the refused symbols do not flow until a
    command changes the universe (``alpaca-broker subscriptions`` shows the rest)."""
    found: list[str] = []
    for name, doc in producers.items():
        if doc.get("role") == "standby":
            continue
        for stream, state in doc.get("streams", {}).items():
            subs = state.get("subscriptions") or {}
            for refused in subs.get("refusals") or []:
                found.append(f"producer {name!r}: stream {stream}: {refusal_line(refused)}")
    return found


def flow(producers: dict[str, Any], now: float) -> dict[str, float | None]:
    """Seconds since each producer stream's last message (``None``: none yet), by
    ``producer/stream``: whether events are flowing (pure)."""
    ages: dict[str, float | None] = {}
    for name, doc in producers.items():
        for stream, state in doc.get("streams", {}).items():
            last = state.get("last_message_at")
            ages[f"{name}/{stream}"] = round(now - last, 1) if last else None
    return ages


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``alpaca-broker health``."""
    parser = argparse.ArgumentParser(prog="alpaca-broker health", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument(
        "--producer",
        action="append",
        help="producer name that must be alive; repeatable (default: PRODUCER_NAME when it is "
        "set, else any running producer)",
    )
    parser.add_argument("--timeout", type=float, default=1.0, help="seconds to wait for workers")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        exit_on_config_error(exc)
    from celery_app import create_app

    client = connect(settings, decode_responses=True, socket_timeout=3, socket_connect_timeout=3)
    report: dict[str, Any] = {"redis": {}, "queues": {}, "producers": {}, "workers": {}}
    try:
        report["redis"] = collect_redis(client)
        brokers = broker_clients(settings, client)
        try:
            report["queues"] = collect_queues(client, brokers)
        except (redis.RedisError, OSError) as exc:
            if all(broker is client for broker in brokers.values()):
                raise  # the output Redis: reported as such below
            report["queues"] = {"error": f"a queue's broker is unreachable: {exc}"}
        keys = Keys(settings.redis_key_prefix)
        report["producers"] = collect_producers(client, keys)
        report["price_lag"] = collect_price_lag(client, keys, time.time_ns())
        report["dead_letters"] = collect_dead_letters(client, keys)
        report["leases"] = collect_leases(
            client, keys, report["producers"], settings.producer_lease
        )
        # Watch-only apps: asking the workers must not put their unacknowledged tasks back.
        report["workers"] = collect_workers(create_app(settings, watch_only=True), args.timeout)
        if settings.prices_broker_apart:  # its workers answer on their own broker
            prices_app = create_app(settings, PRICES_QUEUE, watch_only=True)
            report["workers"].update(collect_workers(prices_app, args.timeout))
    except (redis.RedisError, OSError) as exc:
        report["redis"] = {"error": f"{describe(settings)}: {reason(exc)}"}
    report["sentinel"] = collect_sentinel(settings, client)
    report["last_message_age_s"] = flow(report["producers"], time.time())
    report["reconciliation"] = reconciliation_passes(report["producers"], time.time())
    reasons = problems(report, settings, required_producers(settings, args.producer))
    reasons = sentinel_problems(report["sentinel"]) + reasons
    report["healthy"], report["problems"] = not reasons, reasons
    print(json.dumps(report, indent=2, default=str) if args.json else render(report))
    return 0 if not reasons else 1


def render(report: dict[str, Any]) -> str:
    """The human-readable report."""
    lines = ["healthy" if report["healthy"] else "UNHEALTHY"]
    lines += [f"  problem: {p}" for p in report["problems"]]
    lines += render_sentinel(report.get("sentinel"))
    r = report["redis"]
    if "error" not in r:
        limit = r.get("maxmemory") or 0
        memory = (
            f"{r['used_memory']} of maxmemory {limit} ({r['used_memory'] / limit:.0%})"
            if limit
            else f"{r['used_memory']} (no maxmemory set: unbounded, not checked)"
        )
        lines.append(
            f"redis: ping {r['ping_ms']} ms, memory {memory}, policy "
            f"{r['maxmemory_policy']}, aof {'on' if r['aof_enabled'] else 'off'}, "
            f"clients {r['connected_clients']}"
        )
        q = report["queues"]
        if "error" in q:
            lines.append(f"queues: {q['error']}")
        else:
            depth = ", ".join(f"{k} {v}" for k, v in q["depth"].items())
            oldest = q["oldest_unacked_age_s"]
            lines.append(
                f"queues: {depth}; unacked {q['unacked']}"
                + (f" (oldest {oldest}s)" if oldest is not None else "")
            )
    lag = report.get("price_lag")
    if lag:
        lines.append(
            f"prices: last batch {lag['published_ago_s']:.1f}s ago, {lag['events']} events, "
            f"waited {lag['newest_age_s']:.3f}-{lag['oldest_age_s']:.3f}s"
        )
    ages = report.get("last_message_age_s", {})
    for name, doc in report["producers"].items():
        for stream, s in doc.get("streams", {}).items():
            age = ages.get(f"{name}/{stream}")
            ago = f", last message {age:.1f}s ago" if age is not None else ", no message yet"
            role = f" [{doc['role']}]" if doc.get("role") else ""
            lines.append(
                f"producer {name}{role} {stream}: {s.get('state')}{ago}, "
                f"received {s.get('received')}, enqueued {s.get('enqueued')}, "
                f"dropped {s.get('dropped')}, malformed {s.get('malformed')}, "
                f"reconnects {s.get('reconnects')}"
            )
            subs = s.get("subscriptions")
            if isinstance(subs, dict) and "channels" in subs:
                lines.append(
                    f"producer {name}{role} {stream} universe: {subs.get('desired')} symbols "
                    f"({subs.get('source')}), {subs.get('confirmed')} confirmed by Alpaca, "
                    f"{subs.get('missing')} missing, {len(subs.get('refusals') or [])} refusal(s)"
                )
    for name, last in report.get("reconciliation", {}).items():
        lines.append(_render_pass(name, last))
    dead = report.get("dead_letters")
    if dead:
        lines.append(f"dead letters: {dead.get('count', 0)} in {dead.get('key')}")
    for lease, doc in report.get("leases", {}).items():
        holder = doc["holder"]
        who = (
            f"{holder['holder']} (epoch {holder['epoch']}, since {holder['since']})"
            if holder
            else "none"
        )
        lines.append(
            f"lease {lease}: holder {who}; standbys {', '.join(doc['standbys']) or 'none'}"
        )
    for worker, queues in report["workers"].items():
        lines.append(f"worker {worker}: {','.join(queues)}")
    return "\n".join(lines)


def _render_pass(name: str, last: dict[str, Any]) -> str:
    """One producer's last reconciliation pass, as a line."""
    if last.get("last_pass_at") is None:
        return f"producer {name} reconciliation: no pass yet"
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(last["last_pass_at"]))
    age = last.get("last_pass_age_s")
    ago = f" ({age:.1f}s ago)" if age is not None else ""
    return (
        f"producer {name} reconciliation: last pass {stamp}{ago}, checked {last.get('checked')} "
        f"orders, repaired {last.get('repaired')}, in flight {last.get('in_flight')} "
        f"(passes {last.get('runs')}, repaired in all {last.get('recovered')}, "
        f"failures {last.get('failures')})"
    )


if __name__ == "__main__":
    sys.exit(main())
