"""Secrets never reach an output in any form: raw, JSON-escaped (ASCII or not), repr/ascii
escaped, percent-encoded or decoded, in ``LOG_FORMAT=text`` and ``json``.

The formatter is checked line by line; then the real producer (``alpaca-broker producer``) runs
with credentials and a Redis password holding non-ASCII and JSON-special characters, through
an auth failure (exit 3), reconnects of both streams and reconciliation passes, at DEBUG, and
every output it leaves (stdout, stderr, its recording, every value in Redis) is searched for
every form of every secret.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
import redis

from alpaca_broker.logs import setup_logging
from alpaca_broker.redaction import MASK, Redactor
from alpaca_broker.redis_server import RedisServer
from alpaca_broker.settings import Settings
from simulator.api import Simulator
from tests.harness.compose import service_env
from tests.harness.wait import wait_until
from tests.harness.workers import REPO

KEY = 'PKé"\\%4Bkey-0001'
SECRET = 'sé"cr\\et%2F%zz-ü/+0002'
REDIS_PASSWORD = 'rë"dis\\pw%41-0003'
SECRETS = (KEY, SECRET, REDIS_PASSWORD)
REDIS_URL_PASSWORD = quote(REDIS_PASSWORD, safe="")

log = logging.getLogger("tests.redaction")


def every_form(secret: str) -> set[str]:
    """The forms a careless line could hold, written out here (not taken from the code)."""
    json_ascii, json_utf8 = json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]
    found = {
        secret,
        json_ascii,
        json_utf8,
        repr(secret)[1:-1],
        ascii(secret)[1:-1],
        repr(secret.encode())[2:-1],
        quote(secret, safe=""),
        re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), quote(secret, safe="")),
        quote(secret),
        quote_plus(secret),
        json.dumps(repr(secret)[1:-1])[1:-1],  # a repr inside a JSON line
        json.dumps(ascii(secret)[1:-1])[1:-1],
    }
    if "%" in secret:  # the percent-decoded form, as a URL parser would give it
        from urllib.parse import unquote

        found.add(unquote(secret))
    return found


def leaks(text: str, secrets: tuple[str, ...] = SECRETS) -> list[str]:
    return sorted({form for s in secrets for form in every_form(s) if form in text})


# --- the formatter ---------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_every_form_of_a_secret_is_redacted_in_text_and_json_lines(
    fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    setup_logging("producer", fmt=fmt, secrets=(KEY, SECRET))  # type: ignore[arg-type]
    for form in sorted(every_form(SECRET) | every_form(KEY)):
        log.warning("value <%s>", form)
    log.warning("as a dict %s and a JSON body %s", {"secret": SECRET}, json.dumps({"k": KEY}))
    try:
        raise RuntimeError(f"auth rejected for {SECRET!r}")
    except RuntimeError:
        log.exception("with a traceback")
    err = capsys.readouterr().err
    assert leaks(err) == []
    lines = err.strip().splitlines()
    assert len(lines) >= len(every_form(SECRET)) + 2
    if fmt == "json":
        docs = [json.loads(line) for line in lines if line.startswith("{")]
        assert all(MASK in d["message"] for d in docs if d["message"].startswith("value <"))
        assert any("exc_info" in d for d in docs)
    else:
        assert "value <***>" in err


def test_url_passwords_are_masked_whatever_their_length_or_encoding() -> None:
    redact = Redactor([REDIS_PASSWORD, REDIS_URL_PASSWORD])
    line = redact(f"redis://:{REDIS_URL_PASSWORD}@h:6379/0 and raw {REDIS_PASSWORD}")
    assert line == "redis://:***@h:6379/0 and raw ***"
    # A password too short to be replaced everywhere is masked where a URL holds it...
    assert Redactor(["pw"])("rediss://user:pw@h/0") == "rediss://user:***@h/0"
    assert Redactor([])("amqp://u:x@h") == "amqp://u:***@h"  # unknown, yet a URL password


def test_a_short_secret_is_replaced_where_it_stands_alone_not_inside_words() -> None:
    # Replacing "ab" everywhere would blank out unrelated words; standing alone (no letter,
    # digit or _ next to it) it is replaced, in each of its forms.
    redact = Redactor(["ab"])
    assert redact("about a table") == "about a table"
    assert redact("password ab, 'ab' \"ab\" (ab) ab=1 x_ab ab2") == (
        "password ***, '***' \"***\" (***) ***=1 x_ab ab2"
    )
    assert Redactor(["pw"])("rediss://user:pw@h/0 a pw b") == "rediss://user:***@h/0 a *** b"
    assert Redactor(["é!"])("it is é! and %C3%A9%21 and \\u00e9!") == ("it is *** and *** and ***")
    assert Redactor(["abcd"])("xabcdx") == "x***x"  # 4 characters and more: everywhere
    assert Redactor(["x"])("max 1 x 2") == "max 1 *** 2"
    assert Redactor([""])("nothing to hide") == "nothing to hide"


# --- uncaught exceptions -----------------------------------------------------------------

UNCAUGHT = """
import sys, threading
from alpaca_broker.logs import setup_logging
setup_logging("producer", fmt=sys.argv[1], secrets=[sys.argv[2]])
secret = sys.argv[2]

def leak():
    raise RuntimeError(f"thread leaked {secret!r} and {dict(password=secret)}")

class Leaky:
    def __del__(self):
        raise RuntimeError(f"unraisable leaked {secret}")

thread = threading.Thread(target=leak, name="leaky")
thread.start()
thread.join()
Leaky()  # its __del__ raises at once: "Exception ignored in ..."
raise ValueError("main leaked", secret, {"secret": secret})
"""


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_uncaught_and_unraisable_exceptions_of_every_thread_go_through_the_redactor(
    fmt: str, tmp_path: Path
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", UNCAUGHT, fmt, SECRET],
        cwd=tmp_path,
        env=service_env("redis://127.0.0.1:1/0"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1  # still Python's exit code for an uncaught exception
    assert leaks(done.stderr) == []
    assert "uncaught exception in thread leaky" in done.stderr
    assert "RuntimeError: thread leaked" in done.stderr  # the tracebacks are still there
    assert "ValueError: ('main leaked'" in done.stderr
    assert "RuntimeError: unraisable leaked ***" in done.stderr
    assert done.stderr.count(MASK) >= 5
    if fmt == "json":
        docs = [json.loads(line) for line in done.stderr.splitlines()]
        assert [d["level"] for d in docs] == ["CRITICAL", "ERROR", "CRITICAL"]


def test_secret_values_hold_url_passwords_encoded_and_decoded() -> None:
    settings = Settings(
        REDIS_URL=f"redis://:{REDIS_URL_PASSWORD}@127.0.0.1:1/0",
        ALPACA_API_KEY=KEY,
        ALPACA_SECRET_KEY=SECRET,
        _env_file=None,
    )
    assert set(settings.secret_values()) == {KEY, SECRET, REDIS_PASSWORD, REDIS_URL_PASSWORD}


# --- the real producer -------------------------------------------------------------------


@pytest.fixture
def locked_redis(tmp_path: Path) -> Iterator[str]:
    """A Redis that requires REDIS_PASSWORD; its URL (password percent-encoded)."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    redis.Redis(port=server.port).config_set("requirepass", REDIS_PASSWORD)
    yield f"redis://:{REDIS_URL_PASSWORD}@127.0.0.1:{server.port}/0"
    server.stop()


class Run:
    """``alpaca-broker producer`` with stdout and stderr kept apart."""

    def __init__(self, directory: Path, redis_url: str, sim: Simulator, **env: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.out, self.err = directory / "stdout", directory / "stderr"
        urls = dict(line.split("=", 1) for line in sim.env_lines())
        self.env = service_env(
            redis_url,
            ALPACA_API_KEY=KEY,
            ALPACA_SECRET_KEY=SECRET,
            LOG_LEVEL="DEBUG",
            HEALTH_INTERVAL="0.5",
            **urls,
            **env,
        )
        with self.out.open("ab") as out, self.err.open("ab") as err:
            self.proc = subprocess.Popen(
                ["alpaca-broker", "producer"], env=self.env, cwd=REPO, stdout=out, stderr=err
            )

    def text(self) -> str:
        return self.out.read_text(errors="replace") + self.err.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.proc.wait(30)


def _heartbeat(client: redis.Redis) -> dict[str, object]:
    raw = client.get("alpaca:health:producer:default")
    return json.loads(raw) if raw else {}


def _streams(client: redis.Redis) -> dict[str, dict[str, Any]]:
    streams: dict[str, dict[str, Any]] = _heartbeat(client).get("streams", {})  # type: ignore[assignment]
    return streams


def _all_connected(client: redis.Redis) -> bool:
    streams = _streams(client)
    return bool(streams) and all(s.get("state") == "connected" for s in streams.values())


def _redis_text(client: redis.Redis) -> str:
    """Every value in Redis as text, task bodies (base64) decoded."""
    parts: list[str] = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        values: list[str] = []
        if kind == "string":
            values = [client.get(key) or ""]
        elif kind == "list":
            values = client.lrange(key, 0, -1)
        elif kind == "hash":
            values = [f"{k}={v}" for k, v in client.hgetall(key).items()]
        elif kind == "zset":
            values = client.zrange(key, 0, -1)
        elif kind == "stream":
            values = [json.dumps(fields) for _, fields in client.xrange(key)]
        for value in values:
            parts.append(value)
            if value.startswith("{") and '"body"' in value:
                body = json.loads(value).get("body", "")
                parts.append(base64.b64decode(body).decode(errors="replace"))
    return "\n".join([*map(str, client.keys()), *parts])


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["text", "json"])
def test_producer_outputs_hold_no_form_of_any_secret_through_auth_failure_reconnects_and_reconciliation(  # noqa: E501
    fmt: str, locked_redis: str, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(locked_redis, decode_responses=True)
    record = tmp_path / "record.jsonl"
    env = {"LOG_FORMAT": fmt, "RECONCILE_INTERVAL": "0.5", "ALPACA_RECORD_FILE": str(record)}
    runs: list[Run] = []

    # 1. Alpaca rejects the credentials on both streams: one clear line, exit 3. (Rejected by
    # fault injection: the simulator's --key/--secret comparison, hmac.compare_digest on str,
    # raises TypeError for non-ASCII secrets instead of answering.)
    with Simulator(rate=20) as rejecting:
        for stream in ("data", "trading"):
            rejecting.fail_auth(stream, count=None)
        runs.append(Run(tmp_path / "rejected", locked_redis, rejecting, **env))
        assert runs[-1].proc.wait(60) == 3, runs[-1].text()[-3000:]

    # 2. Accepted: both streams connect, are cut and reconnect; reconciliation runs each time.
    with Simulator(rate=20, order_rate=2) as sim:
        run = Run(tmp_path / "accepted", locked_redis, sim, **env)
        runs.append(run)
        wait_until(lambda: _all_connected(client), 30, message=f"connected\n{run.text()[-3000:]}")
        rest_before = sim.stats()["connections"].get("rest", 0)
        for stream in ("data", "trading"):
            sim.drop(stream)
        wait_until(
            lambda: (
                _all_connected(client)
                and all(int(s.get("reconnects", 0)) >= 1 for s in _streams(client).values())
            ),
            30,
            message=f"both streams reconnected\n{run.text()[-3000:]}",
        )
        wait_until(
            lambda: sim.stats()["connections"].get("rest", 0) >= rest_before + 2,
            20,
            message="reconciliation asked REST again after the reconnects",
        )
        assert run.stop() == 0, run.text()[-3000:]

    produced = "\n".join(r.text() for r in runs)
    assert "rejected" in runs[0].text().lower() or "auth" in runs[0].text().lower()
    assert "reconcil" in produced  # the passes ran and logged (DEBUG and up)
    if fmt == "json":
        for line in produced.splitlines():
            if line.startswith("{"):
                json.loads(line)  # every log line stays valid JSON after redaction
    outputs = {
        "producer output": produced,
        "recording": record.read_text(errors="replace") if record.exists() else "",
        "redis": _redis_text(client),
    }
    found = {where: leaks(text) for where, text in outputs.items()}
    assert found == {where: [] for where in outputs}
