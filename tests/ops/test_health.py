"""``alpaca-broker health`` against the compose services running here: healthy, unhealthy for
each reason it must name (heartbeat expired, a stream in ``auth_failed``, the oldest
unacknowledged task near the visibility timeout, no worker on a queue), and healthy again."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from alpaca_broker.health import (
    collect_dead_letters,
    collect_leases,
    flow,
    problems,
    reconciliation_passes,
    render,
    required_producers,
)
from alpaca_broker.keys import Keys
from alpaca_broker.redis_server import free_port
from alpaca_broker.settings import Settings
from simulator.api import Simulator
from tests.harness.stack import OpsStack
from tests.harness.wait import wait_until

pytestmark = pytest.mark.slow

Report = dict[str, Any]


def health(stack: OpsStack, env: dict[str, str]) -> Report:
    """One ``alpaca-broker health --json`` run: its report, plus ``exit`` (its exit code)."""
    done = stack.health("--json", **env)
    assert done.returncode in (0, 1), done.stderr
    report: Report = json.loads(done.stdout)
    report["exit"] = done.returncode
    return report


def wait_health(
    stack: OpsStack,
    condition: Callable[[Report], bool],
    what: str,
    timeout: float = 20,
    env: dict[str, str] | None = None,
) -> Report:
    """Run health (with ``env`` added) until ``condition(report)``; return that report."""
    seen: list[Report] = []

    def check() -> Report | None:
        report = health(stack, env or {})
        seen.append(report)
        return report if condition(report) else None

    try:
        return wait_until(check, timeout, interval=0.1, message=what)
    except AssertionError as exc:
        last = seen[-1]["problems"] if seen else "-"
        raise AssertionError(f"{exc}; last problems: {last}") from None


def healthy(report: Report) -> bool:
    return report["exit"] == 0 and report["healthy"] is True and report["problems"] == []


def unhealthy_because(fragment: str) -> Callable[[Report], bool]:
    def check(report: Report) -> bool:
        return report["exit"] == 1 and any(fragment in p for p in report["problems"])

    return check


def test_healthy_stack_exits_0_and_reports_redis_queues_producer_workers_and_flow(
    stack: OpsStack,
) -> None:
    report = wait_health(stack, healthy, "healthy")

    assert report["redis"]["aof_enabled"] is True
    assert report["redis"]["maxmemory_policy"] == "noeviction"
    assert report["redis"]["ping_ms"] >= 0
    assert report["redis"]["connected_clients"] >= 1
    assert set(report["queues"]["depth"]) == {"prices", "orders"}
    assert "unacked" in report["queues"]
    streams = report["producers"][stack.producer_name]["streams"]
    assert {s: v["state"] for s, v in streams.items()} == {
        "prices": "connected",
        "orders": "connected",
    }
    assert streams["prices"]["received"] > 0
    assert report["workers"] == {
        stack.worker_name("worker-prices"): ["prices"],
        stack.worker_name("worker-orders"): ["orders"],
    }
    age = report["last_message_age_s"][f"{stack.producer_name}/prices"]
    assert age is not None
    assert age < 5  # the simulated market is flowing

    text = stack.health()
    assert text.returncode == 0, text.stdout
    assert text.stdout.splitlines()[0] == "healthy"
    assert f"worker {stack.worker_name('worker-orders')}: orders" in text.stdout


def test_health_shows_the_producers_last_reconciliation_pass(stack: OpsStack) -> None:
    def passed(report: Report) -> bool:
        last = report.get("reconciliation", {}).get(stack.producer_name) or {}
        return last.get("last_pass_at") is not None

    report = wait_health(stack, passed, "a reconciliation pass reported")
    last = report["reconciliation"][stack.producer_name]
    assert 0 <= last["last_pass_age_s"] < 120  # at connect, then every RECONCILE_INTERVAL
    assert isinstance(last["checked"], int)
    assert isinstance(last["repaired"], int)
    assert report["dead_letters"]["count"] == 0

    text = stack.health().stdout
    assert f"producer {stack.producer_name} reconciliation: last pass " in text
    assert "dead letters: 0 in alpaca:orders:dead" in text.splitlines()


def test_unhealthy_when_the_producer_heartbeat_expires_then_healthy_again(
    stack: OpsStack,
) -> None:
    stack.services["producer-demo"].kill()  # no last "stopped" beat: the key just expires

    report = wait_health(stack, unhealthy_because("no heartbeat"), "heartbeat expired")
    assert stack.producer_name not in report["producers"]

    stack.start_producer()
    wait_health(stack, healthy, "healthy after the producer restarted")


def test_unhealthy_while_a_stream_is_auth_failed_then_healthy_again(stack: OpsStack) -> None:
    stack.services["producer-demo"].stop()
    with Simulator() as rejecting:
        rejecting.fail_auth("trading", count=None)
        urls = dict(line.split("=", 1) for line in rejecting.env_lines())
        # No METRICS_PORT: the endpoint is off unless asked for. A long heartbeat interval
        # keeps the producer's last word (auth_failed) readable for a while after it exits.
        producer = stack.start_producer(wait=False, metrics=False, HEALTH_INTERVAL="5", **urls)
        assert producer.wait_exit(30) == 3, producer.log()[-2000:]

    report = wait_health(stack, unhealthy_because("auth_failed"), "auth_failed reported")
    doc = report["producers"][stack.producer_name]
    assert doc["streams"]["orders"]["state"] == "auth_failed"
    assert "stream orders rejected by Alpaca (auth_failed)" in " ".join(report["problems"])
    assert "metrics" not in doc["threads"]

    stack.start_producer()
    wait_health(stack, healthy, "healthy once the credentials are accepted")


def test_unhealthy_when_the_oldest_unacked_task_nears_the_visibility_timeout_then_healthy_again(
    stack: OpsStack,
) -> None:
    visibility = {"CELERY_VISIBILITY_TIMEOUT": "3"}
    wait_health(stack, healthy, "healthy first", env=visibility)
    # The pool processes stop; the worker's main process still takes order tasks from the
    # queue (unacknowledged until a pool process has run them) and still answers pings.
    paused = stack.services["worker-orders"].pause_children()
    try:
        report = wait_health(
            stack,
            unhealthy_because("oldest unacknowledged task"),
            "an order task held unacknowledged",
            timeout=30,
            env=visibility,
        )
        assert report["queues"]["unacked"] >= 1
        assert report["queues"]["oldest_unacked_age_s"] >= 0.8 * 3
        assert report["workers"][stack.worker_name("worker-orders")] == ["orders"]
        # Past health's 3 s the task is still the worker's (20 s): asking the workers put
        # nothing back in the queue (celery_app.broker.WATCH_ONLY; before, this case was
        # flaky: a run of health restored the tasks and the next saw none).
        report = wait_health(
            stack,
            lambda r: (r["queues"]["oldest_unacked_age_s"] or 0) >= 4,
            "the task still unacknowledged after health's visibility timeout",
            env=visibility,
        )
        assert report["queues"]["unacked"] >= 1
    finally:
        stack.services["worker-orders"].resume(paused)

    wait_health(stack, healthy, "healthy once the worker runs its tasks", env=visibility)


def test_unhealthy_when_no_worker_consumes_a_queue_then_healthy_again(stack: OpsStack) -> None:
    stack.services["worker-prices"].stop()

    report = wait_health(stack, unhealthy_because("no worker consumes queue 'prices'"), "no worker")
    assert stack.worker_name("worker-prices") not in report["workers"]
    assert report["problems"] == ["no worker consumes queue 'prices'"]

    stack.start_worker("worker-prices")
    wait_health(stack, healthy, "healthy with a prices worker again")


def test_unhealthy_when_redis_is_unreachable(stack: OpsStack) -> None:
    done = stack.health(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")

    assert done.returncode == 1
    assert done.stdout.splitlines()[:2][0] == "UNHEALTHY"
    assert "problem: redis unreachable" in done.stdout


# --- the verdict itself (pure) ---------------------------------------------------------------

SETTINGS = Settings(CELERY_VISIBILITY_TIMEOUT=300, _env_file=None)  # the scenario: 300 s


def _report(**overrides: Any) -> Report:
    running = {"status": "running", "streams": {"prices": {"state": "connected"}}}
    report: Report = {
        "redis": {"ping_ms": 0.1},
        "queues": {"depth": {"prices": 0, "orders": 0}, "unacked": 0, "oldest_unacked_age_s": None},
        "producers": {"default": running},
        "workers": {"w@h": ["orders", "prices"]},
    }
    report.update(overrides)
    return report


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"producers": {}}, "producer 'default': no heartbeat (stopped, or its key expired)"),
        (
            {"producers": {"default": {"status": "stopped", "streams": {}}}},
            "producer 'default': stopped (its last heartbeat)",
        ),
        (
            {
                "producers": {
                    "default": {
                        "status": "running",
                        "streams": {"orders": {"state": "auth_failed"}},
                    }
                }
            },
            "producer 'default': stream orders rejected by Alpaca (auth_failed)",
        ),
        (
            {"queues": {"depth": {}, "unacked": 1, "oldest_unacked_age_s": 240.0}},
            "oldest unacknowledged task is 240s old (visibility timeout 300s): "
            "a worker died or is stuck",
        ),
        ({"workers": {"w@h": ["prices"]}}, "no worker consumes queue 'orders'"),
        ({"redis": {"error": "Connection refused"}}, "redis unreachable: Connection refused"),
        (
            {"price_lag": {"oldest_age_s": 12.5}},
            "price workers lag: the last batch published events 12.5s after they were read "
            "(more price workers, or a stalled pool)",
        ),
        (
            {"leases": {"feed": {"holder": None, "standbys": ["b"]}}},
            "lease 'feed': no holder (no producer holds Alpaca's connections)",
        ),
        (
            {"leases": {"feed": {"holder": {"holder": "gone", "epoch": 3}, "standbys": []}}},
            "lease 'feed': holder 'gone' has no live heartbeat",
        ),
        (
            {
                "producers": {
                    "default": {
                        "status": "running",
                        "streams": {},
                        "reconciliation": {
                            "last_success_at": None,
                            "failures": 3,
                            "last_error": "APIError: 404",
                        },
                    }
                }
            },
            "producer 'default': order reconciliation has not succeeded for 3 intervals "
            "(3 failures, last error: APIError: 404)",
        ),
        (
            {
                "dead_letters": {
                    "key": "alpaca:orders:dead",
                    "count": 2,
                    "newest_reason": "MalformedMessage: order: bad symbol",
                }
            },
            "dead letters: 2 order/news task(s) that can never be published in "
            "alpaca:orders:dead (newest reason: MalformedMessage: order: bad symbol); read "
            "them (XRANGE), fix the cause, then delete them (XDEL)",
        ),
    ],
    ids=[
        "heartbeat-expired",
        "stopped",
        "auth-failed",
        "unacked-near-timeout",
        "no-worker",
        "redis",
        "price-lag",
        "lease-without-holder",
        "lease-holder-dead",
        "reconciliation-stalled",
        "dead-letters",
    ],
)
def test_problems_name_each_reason(overrides: dict[str, Any], reason: str) -> None:
    assert problems(_report(**overrides), SETTINGS, ["default"]) == [reason]


def test_problems_of_a_healthy_report_are_none_and_young_unacked_tasks_are_fine() -> None:
    young = {"depth": {}, "unacked": 5, "oldest_unacked_age_s": 239.0}
    assert problems(_report(), SETTINGS, ["default"]) == []
    assert problems(_report(queues=young), SETTINGS, ["default"]) == []


def test_an_explicit_producer_name_or_option_is_required_by_name_else_any_producer_counts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PRODUCER_NAME", raising=False)
    unset = Settings(_env_file=None)
    assert unset.producer_name == "default"
    assert required_producers(unset, None) is None
    assert required_producers(unset, ["feed-a"]) == ["feed-a"]
    explicit = Settings(PRODUCER_NAME="default", _env_file=None)
    assert required_producers(explicit, None) == ["default"]
    assert required_producers(explicit, ["a", "b"]) == ["a", "b"]
    monkeypatch.setenv("PRODUCER_NAME", "feed-a")
    assert required_producers(Settings(_env_file=None), None) == ["feed-a"]


def test_without_a_required_name_one_running_producer_of_any_name_is_healthy() -> None:
    running = {"status": "running", "streams": {}}
    stopped = {"status": "stopped", "streams": {}}
    none_running = (
        "no producer running: no live heartbeat with status running "
        "(PRODUCER_NAME is not set, so a producer of any name counts)"
    )
    assert problems(_report(producers={"feed-a": running}), SETTINGS, None) == []
    assert problems(_report(producers={"a": stopped, "b": running}), SETTINGS, None) == []
    assert problems(_report(producers={}), SETTINGS, None) == [none_running]
    assert problems(_report(producers={"feed-a": stopped}), SETTINGS, None) == [none_running]
    # By name (explicit PRODUCER_NAME), another producer's heartbeat does not do.
    assert problems(_report(producers={"feed-a": running}), SETTINGS, ["default"]) == [
        "producer 'default': no heartbeat (stopped, or its key expired)"
    ]


def test_flow_gives_seconds_since_each_streams_last_message() -> None:
    producers = {"p": {"streams": {"prices": {"last_message_at": 90.0}, "orders": {}}}}
    assert flow(producers, now=100.0) == {"p/prices": 10.0, "p/orders": None}


def test_an_empty_dead_letter_stream_is_no_problem() -> None:
    empty = {"key": "alpaca:orders:dead", "count": 0, "newest_reason": None}
    assert problems(_report(dead_letters=empty), SETTINGS, ["default"]) == []


def test_reconciliation_passes_give_each_producers_last_pass_checked_and_repaired() -> None:
    stats = {
        "runs": 12, "recovered": 3, "failures": 1, "last_pass_at": 1000.0, "last_checked": 40,
        "last_repaired": 2, "last_in_flight": 1,
    }  # fmt: skip
    producers = {"feed-a": {"reconciliation": stats}, "prices-only": {"streams": {}}}
    passes = reconciliation_passes(producers, now=1012.5)
    assert passes == {
        "feed-a": {
            "last_pass_at": 1000.0, "last_pass_age_s": 12.5, "checked": 40, "repaired": 2,
            "in_flight": 1, "runs": 12, "recovered": 3, "failures": 1,
        }
    }  # fmt: skip
    report = _report(reconciliation=passes)
    report.update(healthy=True, problems=[])
    report["redis"].update(
        used_memory=1, maxmemory_policy="noeviction", aof_enabled=True, connected_clients=3
    )
    assert (
        "producer feed-a reconciliation: last pass 1970-01-01T00:16:40Z (12.5s ago), checked 40 "
        "orders, repaired 2, in flight 1 (passes 12, repaired in all 3, failures 1)"
    ) in render(report).splitlines()
    unrun = reconciliation_passes({"b": {"reconciliation": {"runs": 0}}}, now=5.0)
    report["reconciliation"] = unrun
    assert "producer b reconciliation: no pass yet" in render(report).splitlines()


def test_render_names_problems_first_and_tolerates_missing_values() -> None:
    report = _report()
    report.update(healthy=False, problems=["no worker consumes queue 'orders'"])
    report["redis"].update(
        used_memory=1, maxmemory_policy="noeviction", aof_enabled=True, connected_clients=3
    )
    lines = render(report).splitlines()
    assert lines[:2] == ["UNHEALTHY", "  problem: no worker consumes queue 'orders'"]
    assert "queues: prices 0, orders 0; unacked 0" in lines
    assert any("no message yet" in line for line in lines)


# --- lease discovery, against a real Redis ---------------------------------------------------


def test_every_key_under_the_lease_pattern_is_a_lease_with_a_ttl_and_each_is_found_once(
    redis_url: str, redis_client: Any
) -> None:
    import threading

    from producers.lease import Lease

    keys = Keys("alpaca")
    settings = Settings(
        REDIS_URL=redis_url, PRODUCER_LEASE="feed", PRODUCER_NAME="a", _env_file=None
    )
    lease = Lease(settings, lambda active: None)
    thread = threading.Thread(target=lease.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: lease.role == "active", 10, message="the lease taken")
        under = list(redis_client.scan_iter(match=f"{keys.lease('')}*"))
        assert under == [keys.lease("feed")]
        assert redis_client.type(keys.lease("feed")) == "string"
        assert redis_client.pttl(keys.lease("feed")) > 0
        assert redis_client.get(keys.lease_epoch("feed")) == "1"
        leases = collect_leases(redis_client, keys, {}, None)
        assert list(leases) == ["feed"]
        assert leases["feed"]["holder"]["holder"] == "a"
        assert leases["feed"]["holder"]["epoch"] == 1
    finally:
        lease.stop()
        thread.join(10)
        lease.flush(1)


# --- memory, against a real Valkey with a small maxmemory ------------------------------------


def _health_of(url: str) -> tuple[int, Report, str]:
    import subprocess
    import sys

    from tests.harness.compose import service_env
    from tests.harness.workers import REPO

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "alpaca_broker", "health", "--timeout", "0.2", *args]
        env = service_env(url)
        return subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=60)

    doc = run("--json")
    return doc.returncode, json.loads(doc.stdout), run().stdout


def test_health_flags_redis_memory_near_maxmemory_and_says_when_there_is_no_limit(
    tmp_path: Any,
) -> None:
    import redis

    from alpaca_broker.redis_server import RedisServer

    server = RedisServer(tmp_path / "small")
    server.start()
    client = redis.Redis.from_url(server.url)
    try:
        _, report, text = _health_of(server.url)
        assert report["redis"]["maxmemory"] == 0
        assert report["redis"]["memory_limit"] == "none (not checked)"
        assert not any("memory" in p for p in report["problems"])
        assert "no maxmemory set: unbounded, not checked" in text

        limit = client.info()["used_memory"] + 4 * 1024 * 1024
        client.config_set("maxmemory", limit)
        filled = 0
        while client.info()["used_memory"] < 0.85 * limit:
            client.set(f"fill:{filled}", b"x" * 65536)
            filled += 1
        code, report, text = _health_of(server.url)
        assert code == 1
        assert (
            [p for p in report["problems"] if "memory" in p]
            == [p for p in report["problems"] if p.startswith("redis memory near its limit")]
            != []
        )
        assert f"of maxmemory {limit}" in text

        client.flushall()
        _, report, _ = _health_of(server.url)
        assert not any("memory" in p for p in report["problems"])  # fine again
    finally:
        server.stop()


# --- dead letters, against a real Redis ------------------------------------------------------


def test_dead_letters_are_counted_with_the_newest_reason(redis_client: Any) -> None:
    keys = Keys("alpaca")
    assert collect_dead_letters(redis_client, keys) == {
        "key": "alpaca:orders:dead", "count": 0, "newest_reason": None, "newest_task": None,
    }  # fmt: skip
    redis_client.xadd(keys.orders_dead_letter, {"task": "orders.publish_event", "reason": "old"})
    newest = redis_client.xadd(
        keys.orders_dead_letter, {"task": "news.publish_article", "reason": "bad: headline"}
    )
    assert collect_dead_letters(redis_client, keys) == {
        "key": "alpaca:orders:dead", "count": 2, "newest_reason": "bad: headline",
        "newest_task": "news.publish_article", "newest_id": newest,
    }  # fmt: skip


def test_health_exits_1_while_the_dead_letter_stream_holds_an_entry_and_counts_it_in_json(
    tmp_path: Any,
) -> None:
    import redis

    from alpaca_broker.redis_server import RedisServer

    keys = Keys("alpaca")
    server = RedisServer(tmp_path / "dead")
    server.start()
    client = redis.Redis.from_url(server.url, decode_responses=True)
    try:
        _, report, _ = _health_of(server.url)
        assert report["dead_letters"]["count"] == 0
        assert not any(p.startswith("dead letters") for p in report["problems"])

        reason = "MalformedMessage: order: bad symbol (symbol=None)"
        client.xadd(keys.orders_dead_letter, {"task": "orders.publish_event", "reason": reason})
        code, report, text = _health_of(server.url)
        assert code == 1
        assert report["healthy"] is False
        assert report["dead_letters"]["count"] == 1
        assert report["dead_letters"]["newest_reason"] == reason
        dead = [p for p in report["problems"] if p.startswith("dead letters")]
        assert dead == [
            "dead letters: 1 order/news task(s) that can never be published in alpaca:orders:dead "
            f"(newest reason: {reason}); read them (XRANGE), fix the cause, then delete them (XDEL)"
        ]
        assert f"  problem: {dead[0]}" in text.splitlines()
        assert "dead letters: 1 in alpaca:orders:dead" in text.splitlines()

        client.delete(keys.orders_dead_letter)  # the operator dealt with them
        _, report, _ = _health_of(server.url)
        assert report["dead_letters"]["count"] == 0
        assert not any(p.startswith("dead letters") for p in report["problems"])
    finally:
        server.stop()
