"""The compose ``monitoring`` profile for tests: a real Prometheus (Debian's package) on a
config made from monitoring/prometheus.yml, and the Grafana dashboard's queries."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import requests
import yaml

from tests.harness.wait import wait_until
from tests.harness.workers import REPO

MONITORING = REPO / "monitoring"
PROMETHEUS_CONFIG = MONITORING / "prometheus.yml"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "alpaca-broker.json"
PROVISIONING = MONITORING / "grafana" / "provisioning"
# Grafana's macros in a dashboard query, as Prometheus gets them for a short test run.
GRAFANA_MACROS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "5m"}
PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
    "and", "or", "unless", "offset", "inf", "nan",
}  # fmt: skip


def prometheus_binary() -> tuple[str | None, str]:
    """The ``prometheus`` executable, installing Debian's package when missing; else None and
    the reason it could not be had."""
    found = shutil.which("prometheus")
    if found:
        return found, ""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None, "prometheus is not installed and apt-get cannot run here (not root)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (
        ["apt-get", "update"],
        ["apt-get", "install", "-y", "--no-install-recommends", "prometheus"],
    ):
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            return None, f"{' '.join(argv)} failed: {done.stderr.strip()[-500:]}"
    # The package may start its own service (port 9090): this suite never uses it.
    subprocess.run(
        ["sh", "-c", "invoke-rc.d prometheus stop || service prometheus stop"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    found = shutil.which("prometheus")
    return (found, "") if found else (None, "apt-get installed no prometheus executable")


def scrape_config(targets: dict[str, str], interval: str = "1s") -> dict[str, Any]:
    """monitoring/prometheus.yml with each job's discovery replaced by one static target
    (``targets``: job name -> host:port) and a short scrape interval."""
    config: dict[str, Any] = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    config["global"].update(scrape_interval=interval, evaluation_interval=interval)
    jobs = config["scrape_configs"]
    assert {job["job_name"] for job in jobs} == set(targets), "a target per job"
    for job in jobs:
        for discovery in ("static_configs", "dns_sd_configs"):
            job.pop(discovery, None)
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
        # A rule on a discovery label names nothing here; the rest stays as written.
        job["relabel_configs"] = [
            rule
            for rule in job.get("relabel_configs", [])
            if not any(s.startswith("__meta_") for s in rule.get("source_labels", []))
        ]
    return config


def configured_targets() -> dict[str, list[str]]:
    """The config's targets per job (static host:port, or DNS name:port)."""
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    out: dict[str, list[str]] = {}
    for job in config["scrape_configs"]:
        found = [t for c in job.get("static_configs", []) for t in c["targets"]]
        found += [f"{n}:{c['port']}" for c in job.get("dns_sd_configs", []) for n in c["names"]]
        out[job["job_name"]] = found
    return out


class Prometheus:
    """``prometheus`` run with the compose service's flags, its paths and port made local."""

    def __init__(self, binary: str, flags: list[str], directory: Path, port: int) -> None:
        self.directory = directory
        self.port = port
        self.config_path = directory / "prometheus.yml"
        local = {
            "--config.file": str(self.config_path),
            "--storage.tsdb.path": str(directory / "data"),
            "--web.listen-address": f"127.0.0.1:{port}",
        }
        argv = [binary]
        for flag in flags:
            name = flag.split("=", 1)[0]
            argv.append(f"{name}={local[name]}" if name in local else flag)
        self.argv = argv
        self.log_path = directory / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, config: dict[str, Any], timeout: float = 60) -> Prometheus:
        self.config_path.write_text(yaml.safe_dump(config))
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT)
        wait_until(self._ready, timeout, interval=0.2, message=f"prometheus ready\n{self.log()}")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"prometheus exited {self.proc.returncode}:\n{self.log()}")
        try:
            return requests.get(f"{self.url}/-/ready", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def api(self, path: str, **params: Any) -> Any:
        reply = requests.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = reply.json()
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        result: list[dict[str, Any]] = data["result"]
        return result

    def series(self, name: str) -> list[dict[str, str]]:
        found: list[dict[str, str]] = self.api("series", **{"match[]": name})
        return found

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def dashboard_queries() -> dict[str, list[str]]:
    """Each panel's title -> its queries, Grafana's macros replaced (:data:`GRAFANA_MACROS`)."""
    out: dict[str, list[str]] = {}
    for panel in dashboard()["panels"]:
        exprs = [t["expr"] for t in panel.get("targets", [])]
        for macro, value in GRAFANA_MACROS.items():
            exprs = [e.replace(macro, value) for e in exprs]
        out[panel["title"]] = exprs
    return out


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers that are neither functions,
    keywords, label names (in ``{...}``, ``by (...)``), strings nor durations."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for found in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)(\s*\()?", text):
        word, call = found.group(1), found.group(2)
        if call or word.lower() in PROMQL_WORDS:
            continue
        names.add(word)
    return names
