"""Measuring a running pipeline from outside: channel listeners and process samplers."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import hiredis
import psutil

from alpaca_broker.timestamps import parse_rfc3339


def _command(*parts: str) -> bytes:
    out = [f"*{len(parts)}\r\n".encode()]
    for part in parts:
        raw = part.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of already sorted values, nearest rank; NaN when empty."""
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * len(sorted_values)) - 1))
    return sorted_values[index]


@dataclass
class ChannelProbe:
    """Subscribes to a channel pattern and records each event's latency from ``received_at``.

    Latencies are kept only inside the measuring window (``start``/``stop``); ``count``
    counts every event ever seen.
    """

    url: str
    pattern: str
    sample: int = 1
    count: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    window: list[float] = field(default_factory=lambda: [0.0, 0.0])
    _window_count: list[int] = field(default_factory=lambda: [0, 0])
    _measuring: bool = False
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> ChannelProbe:
        # A raw socket and hiredis' reader: redis-py's PubSub costs several microseconds a
        # message, which at 25,000 events/s is a fifth of a core taken from the pipeline.
        parts = urlsplit(self.url)
        sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379))
        if parts.password:
            sock.sendall(_command("AUTH", parts.password))
        sock.sendall(_command("PSUBSCRIBE", self.pattern))
        self._thread = threading.Thread(target=self._listen, args=(sock,), daemon=True)
        self._thread.start()
        return self

    def _listen(self, sock: socket.socket) -> None:
        reader = hiredis.Reader()
        sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                data = sock.recv(1 << 20)
            except TimeoutError:
                continue
            if not data:
                return
            reader.feed(data)
            while (reply := reader.gets()) is not False:
                if not isinstance(reply, list) or reply[0] != b"pmessage":
                    continue
                self.count += 1
                # Timing one event in `sample` keeps the probe's own CPU small too.
                if self._measuring and self.count % self.sample == 0:
                    event = json.loads(reply[3])
                    received = parse_rfc3339(event["received_at"])
                    self.latencies_ms.append((time.time_ns() - received) / 1e6)
        sock.close()

    def measure(self, on: bool) -> None:
        """Open (True) or close (False) the measuring window."""
        self.window[0 if on else 1] = time.monotonic()
        self._window_count[0 if on else 1] = self.count
        self._measuring = on
        if on:
            self.latencies_ms.clear()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(2)

    def summary(self) -> dict[str, float]:
        """Events per second and latency percentiles of the measuring window."""
        values = sorted(self.latencies_ms)
        seconds = max(1e-9, self.window[1] - self.window[0])
        events = self._window_count[1] - self._window_count[0]
        return {
            "events": events,
            "events_per_s": events / seconds,
            "timed": len(values),
            "p50_ms": percentile(values, 0.50),
            "p95_ms": percentile(values, 0.95),
            "p99_ms": percentile(values, 0.99),
            "max_ms": values[-1] if values else float("nan"),
        }


class ProcessSampler:
    """CPU seconds and peak RSS of process trees (pids and their children), by role.

    The trees are listed once, at :meth:`begin` (finding a process's children reads every
    ``/proc/*/stat``: listing them at every RSS sample took a fifth of a core from the
    machine it measures); a process that ends meanwhile is skipped.
    """

    def __init__(self, roles: dict[str, list[int]]) -> None:
        self._roles = roles
        self._cpu0: dict[str, float] = {}
        self._trees: dict[str, list[psutil.Process]] = {}
        self.peak_rss: dict[str, int] = dict.fromkeys(roles, 0)
        self._t0 = 0.0

    def _tree(self, pids: list[int]) -> list[psutil.Process]:
        found: list[psutil.Process] = []
        for pid in pids:
            try:
                root = psutil.Process(pid)
                found += [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                pass
        return found

    def _cpu(self, role: str) -> float:
        total = 0.0
        for proc in self._trees[role]:
            try:
                times = proc.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
        return total

    def begin(self) -> None:
        self._trees = {role: self._tree(pids) for role, pids in self._roles.items()}
        self._t0 = time.monotonic()
        self._cpu0 = {role: self._cpu(role) for role in self._roles}

    def sample_rss(self) -> None:
        for role, tree in self._trees.items():
            rss = 0
            for proc in tree:
                with contextlib.suppress(psutil.NoSuchProcess):
                    rss += proc.memory_info().rss
            self.peak_rss[role] = max(self.peak_rss[role], rss)

    def cpu_percent(self) -> dict[str, float]:
        """Average CPU use (% of one core) of each role since :meth:`begin`."""
        elapsed = max(1e-9, time.monotonic() - self._t0)
        return {role: 100 * (self._cpu(role) - self._cpu0[role]) / elapsed for role in self._roles}


class IngestProbe:
    """The producer's ingest rate, from its health key: messages handed off (``enqueued``)
    per second between two heartbeats, timed by the heartbeats' own ``updated_at``.

    With ``drain``, each sample also empties that queue, standing for the workers a design
    without price workers (``ingest``) leaves out. Left to grow (120,000 msgs/s is about
    12 MB/s of tasks), the queue made Redis rewrite its AOF every few seconds, a fork and a
    copy of hundreds of MB that no deployment makes (its workers drain the queue), and the
    rewrites' CPU and disk writes were the order path's tail: order p99 68 and 115 ms with
    the queue left to grow, 22 and 29 ms with AOF off, in alternating runs.
    """

    def __init__(
        self, client: Any, key: str, stream: str = "prices", drain: str | None = None
    ) -> None:
        self._client, self._key, self._stream, self._drain = client, key, stream, drain
        self._samples: list[tuple[float, int, int]] = []

    def sample(self) -> None:
        if self._drain:
            self._client.unlink(self._drain)  # freed in Redis' background thread
        raw = self._client.get(self._key)
        if not raw:
            return
        health = json.loads(raw)
        stream = health.get("streams", {}).get(self._stream, {})
        at = datetime.fromisoformat(str(health["updated_at"]).replace("Z", "+00:00")).timestamp()
        if not self._samples or at > self._samples[-1][0]:
            self._samples.append((at, stream.get("enqueued", 0), stream.get("received", 0)))

    def begin(self) -> None:
        self._samples.clear()
        self.sample()

    def rate(self) -> float:
        """Messages handed off per second over the sampled window (0 with under two samples)."""
        if len(self._samples) < 2:
            return 0.0
        (t0, e0, _), (t1, e1, _) = self._samples[0], self._samples[-1]
        return (e1 - e0) / max(1e-9, t1 - t0)

    def started(self) -> bool:
        """Whether the producer has received anything yet."""
        return bool(self._samples and self._samples[-1][2] > 0)
