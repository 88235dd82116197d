"""TLS verified end to end, against real TLS-only servers (Redis 7+, built with TLS).

A CA of the test's own (``ours``) certifies the good server, its Sentinel and the clients'
certificate; every process trusts only ``ours`` (``REDIS_TLS_CA_FILE``) and presents the
client certificate (``REDIS_TLS_CERT_FILE``/``REDIS_TLS_KEY_FILE``: the good server requires
one). An order task sent through the Celery app reaches a real worker and ``P:orders:events``
over TLS, plainly and through a TLS Sentinel with a password of its own. A server certified by
another CA (or by ``ours`` for another name), a primary the Sentinel names that is certified by
another CA, and a Sentinel certified by another CA are refused by every client (the output
client of the commands, the Celery broker, the Sentinel connections) with one line naming the
certificate failure; ``REDIS_TLS_CHECK_HOSTNAME=false`` lets only the misnamed one through.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from alpaca_broker.keys import ORDER_EVENT_TASK, Keys
from alpaca_broker.settings import Settings
from celery_app.config import create_app
from tests.harness import redis_flavors
from tests.harness.tls import TestCA, TlsNode, bundle, tls_redis, tls_sentinel
from tests.harness.wait import wait_until
from tests.harness.workers import REPO, WorkerProcess, process_env
from tests.tasks.payloads import trade_update

pytestmark = pytest.mark.slow

PASSWORD = "tls-redis-pass"
SENTINEL_PASSWORD = "tls-sentinel-pass"
KEYS = Keys("alpaca")
VERIFY_FAILED = "CERTIFICATE_VERIFY_FAILED"


@dataclass
class Servers:
    """The test's CA and client certificate, and the TLS-only servers (see the module)."""

    ours: TestCA
    client: tuple[Path, Path]
    good: TlsNode
    rogue: TlsNode  # certified by another CA
    misnamed: TlsNode  # certified by ours, for another host name
    sentinel: TlsNode  # ours; monitors `good` and `rogue`
    rogue_sentinel: TlsNode  # another CA's; monitors `good`

    def env(self, **extra: str) -> dict[str, str]:
        """A process's TLS settings: trust ``ours`` only, present the client certificate."""
        return {
            "REDIS_TLS_CA_FILE": str(self.ours.cert),
            "REDIS_TLS_CERT_FILE": str(self.client[0]),
            "REDIS_TLS_KEY_FILE": str(self.client[1]),
            **extra,
        }

    def direct(self, node: TlsNode) -> dict[str, str]:
        """Settings for ``node`` itself, by host name (its certificate names localhost)."""
        return self.env(REDIS_URL=f"rediss://:{PASSWORD}@localhost:{node.port}/0")

    def through(self, sentinel: TlsNode, master: str) -> dict[str, str]:
        """Settings for the primary ``master`` that ``sentinel`` names (TLS to the Sentinel
        too: REDIS_URL is rediss://)."""
        return self.env(
            REDIS_URL=f"rediss://:{PASSWORD}@ignored:1/0",
            REDIS_SENTINELS=f"127.0.0.1:{sentinel.port}",
            REDIS_SENTINEL_MASTER=master,
            REDIS_SENTINEL_PASSWORD=SENTINEL_PASSWORD,
        )


def _available() -> str:
    """Debian's redis-server 7+ (TLS built in), installed when missing; and openssl."""
    try:
        binary = redis_flavors.binary("redis7")
        if shutil.which("openssl") is None:
            raise redis_flavors.FlavorUnavailable("no openssl command to make certificates")
    except redis_flavors.FlavorUnavailable as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the TLS tests: {exc}")
        pytest.skip(str(exc))
    return binary


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    binary = _available()
    root = tmp_path_factory.mktemp("tls")
    ours, other = TestCA(root / "ours", "ours"), TestCA(root / "other", "other")
    client = ours.issue("client")
    # The servers trust both CAs (the other CA's Sentinel connects to them); the clients only
    # ours, so each refusal below is the client's.
    trusted = bundle(root / "both.crt", ours, other)
    good = tls_redis(binary, root / "good", ours.issue("good"), trusted, client, PASSWORD)
    # The unverifiable ones take any client: only the client's check can stop it.
    rogue = tls_redis(
        binary, root / "rogue", other.issue("rogue"), trusted, client, PASSWORD, "optional"
    )
    misnamed = tls_redis(
        binary, root / "misnamed", ours.issue("misnamed", ("redis.elsewhere.test",)),
        trusted, client, PASSWORD, "optional",
    )  # fmt: skip
    # The harness's own clients of the other CA's servers trust both CAs.
    rogue.ca_file = misnamed.ca_file = trusted
    misnamed.check_hostname = False
    started: list[TlsNode] = []
    try:
        for node in (good, rogue, misnamed):
            node.start()
            started.append(node)
        sentinel = tls_sentinel(
            binary, root / "sentinel", ours.issue("sentinel"), trusted, client,
            SENTINEL_PASSWORD, {"good": good, "rogue": rogue},
        )  # fmt: skip
        rogue_sentinel = tls_sentinel(
            binary, root / "rogue-sentinel", other.issue("rogue-sentinel"), trusted, client,
            SENTINEL_PASSWORD, {"good": good},
        )  # fmt: skip
        rogue_sentinel.ca_file = trusted
        for node in (sentinel, rogue_sentinel):
            node.start()
            started.append(node)
        yield Servers(ours, client, good, rogue, misnamed, sentinel, rogue_sentinel)
    finally:
        for node in started:
            node.stop()


def _command(tmp_path: Path, env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "alpaca_broker", *argv],
        cwd=tmp_path, env=process_env(env["REDIS_URL"], **env), capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip


def _sender(env: dict[str, str]) -> Celery:
    values: dict[str, Any] = {"_env_file": None, **env}
    return create_app(Settings(**values))


# --- the pipeline over TLS ---------------------------------------------------------------


@pytest.mark.parametrize("route", ["direct", "sentinel"])
def test_an_order_sent_through_the_celery_app_reaches_the_stream_over_tls_only(
    servers: Servers, tmp_path: Path, route: str
) -> None:
    """The broker (send and consume) and the output client speak TLS only (the servers have
    no plain port), verified against the test's CA, with the client certificate the server
    requires; through Sentinel, the Sentinel connections too."""
    if route == "direct":  # the broker on another database: health's own client of it too
        broker = f"rediss://:{PASSWORD}@localhost:{servers.good.port}/1"
        env = {**servers.direct(servers.good), "CELERY_BROKER_URL": broker}
    else:
        env = servers.through(servers.sentinel, "good")
    output = servers.good.client(decode_responses=True)
    output.flushdb()  # the order script dedupes: the other route published this event
    worker = WorkerProcess(env["REDIS_URL"], tmp_path / "worker.log", queues="orders", env=env)
    worker.start()
    sender = _sender(env)
    try:
        new = trade_update("AAPL", "new")
        sender.send_task(ORDER_EVENT_TASK, args=[new, 1_795_530_600_500_000_000, "stream"])
        wait_until(lambda: output.xlen(KEYS.orders_events) == 1, 20, message="order published")
        _, fields = output.xrange(KEYS.orders_events)[0]
        assert json.loads(fields["event"])["order_id"] == new["order"]["id"]
        # The commands' clients over TLS too: tail reads the event back.
        done = _command(tmp_path, env, "tail", "orders", "--from-start", "-n", "1")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["order_id"] == new["order"]["id"]
        done = _command(tmp_path, env, "health", "--json")  # unhealthy: no producer runs
        report = json.loads(done.stdout)
        assert "error" not in report["redis"], report["redis"]
        assert "error" not in report["queues"], report["queues"]
        assert list(report["workers"].values()) == [["orders"]]
        if route == "sentinel":  # health asks the Sentinels itself, over TLS, with their password
            assert report["sentinel"]["sentinels_reached"] == [env["REDIS_SENTINELS"]]
            assert report["sentinel"]["primary"] == f"127.0.0.1:{servers.good.port}"
        assert "Traceback" not in worker.log()
    finally:
        sender.close()
        worker.stop()


# --- every client refuses a server it cannot verify --------------------------------------

REFUSED = {
    "another-ca": lambda s: s.direct(s.rogue),
    "another-host-name": lambda s: s.direct(s.misnamed),
    "sentinel-names-a-primary-of-another-ca": lambda s: s.through(s.sentinel, "rogue"),
    "sentinel-of-another-ca": lambda s: s.through(s.rogue_sentinel, "good"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_the_output_client_refuses_an_unverified_server_in_one_line(
    servers: Servers, tmp_path: Path, case: str
) -> None:
    env = REFUSED[case](servers)
    done = _command(tmp_path, env, "tail", "orders")
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("alpaca-broker tail: cannot reach Redis at ")
    assert VERIFY_FAILED in lines[0]
    assert "<redis." not in lines[0]  # a Sentinel is named by its address, not a client repr
    assert PASSWORD not in done.stderr
    assert SENTINEL_PASSWORD not in done.stderr


@pytest.mark.parametrize("case", list(REFUSED))
def test_the_celery_broker_refuses_an_unverified_server(servers: Servers, case: str) -> None:
    """The app's broker connection (what the producer's hand-off, the workers and Flower use):
    kombu left alone connects to a rediss:// server whatever its certificate."""
    app = _sender(REFUSED[case](servers))
    try:
        with app.connection_for_write() as connection, pytest.raises(Exception) as caught:
            connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0)
    finally:
        app.close()
    message = str(caught.value)
    assert VERIFY_FAILED in message
    assert PASSWORD not in message


def test_a_worker_whose_broker_is_unverified_says_so_in_one_line_and_never_connects(
    servers: Servers, tmp_path: Path
) -> None:
    env = servers.direct(servers.rogue)
    worker = WorkerProcess(env["REDIS_URL"], tmp_path / "worker.log", queues="orders", env=env)
    with worker.log_path.open("ab") as out:  # started without waiting: it never gets ready
        worker.proc = subprocess.Popen(
            worker.argv, env=worker.env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        refusal = wait_until(
            lambda: [line for line in worker.log().splitlines() if VERIFY_FAILED in line],
            30,
            message="the worker's refusal",
        )
        # Celery's line (kombu masks the password as **, the log redactor as ***), then
        # "Trying again in 2.00 seconds...": it keeps trying, as for any broker outage.
        assert re.search(r"consumer: Cannot connect to rediss://:\*+@localhost:\d+/0: ", refusal[0])
        log = worker.log()
        assert "Traceback" not in log
        assert "Connected to" not in log
        assert PASSWORD not in log
    finally:
        worker.kill()


def test_with_host_name_checks_off_the_certificate_is_still_verified(
    servers: Servers, tmp_path: Path
) -> None:
    misnamed = {**servers.direct(servers.misnamed), "REDIS_TLS_CHECK_HOSTNAME": "false"}
    done = _command(tmp_path, misnamed, "bars", "AAPL")  # connects, prints no bar
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    rogue = {**servers.direct(servers.rogue), "REDIS_TLS_CHECK_HOSTNAME": "false"}
    done = _command(tmp_path, rogue, "bars", "AAPL")
    assert done.returncode == 1
    assert VERIFY_FAILED in done.stderr
    assert PASSWORD not in done.stderr
