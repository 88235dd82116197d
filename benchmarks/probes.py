"""Measuring a running pipeline from outside: channel listeners and process samplers."""

from __future__ import annotations

import contextlib
import functools
import json
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import orjson
import psutil

from alpaca_broker.timestamps import parse_rfc3339


def _command(*parts: str) -> bytes:
    out = [f"*{len(parts)}\r\n".encode()]
    for part in parts:
        raw = part.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


_PMESSAGE = b"*4\r\n$8\r\npmessage\r\n"


def _bulk(buf: bytes, at: int) -> tuple[int, int] | None:
    """Where the RESP bulk string at ``at`` holds its bytes, and where it ends; None when
    ``buf`` does not hold all of it yet."""
    eol = buf.find(b"\r\n", at)
    if eol == -1:
        return None
    start = eol + 2
    end = start + int(buf[at + 1 : eol])
    return (start, end + 2) if end + 2 <= len(buf) else None


def _payload(buf: bytes, at: int) -> bytes | None:
    """The payload of the ``pmessage`` reply at ``at`` (pattern, channel, payload), or None
    when ``buf`` does not hold all of it yet."""
    cursor = at + len(_PMESSAGE)
    span = None
    for _ in range(3):
        if cursor >= len(buf) or (span := _bulk(buf, cursor)) is None:
            return None
        cursor = span[1]
    assert span is not None
    return buf[span[0] : span[1] - 2]


class PmessageScanner:
    """Counts the ``pmessage`` replies in a RESP stream fed in chunks of any size, and
    returns the payload of one in ``sample``.

    The count is ``bytes.find`` over the chunk, with no reply parsed: the probe's hiredis
    reader built four objects per message, about a seventh of a core at 25,000 events/s, on
    the machine it measures. The marker cannot occur inside a message: JSON payloads and
    channel names hold no raw CR LF.
    """

    def __init__(self, sample: int = 1) -> None:
        self.sample = max(1, sample)
        self.count = 0
        self._buf = b""
        self._scan_from = 0  # in _buf: every marker starting before this is counted
        self._wanted: int | None = None  # in _buf: a sampled reply not all received yet

    def feed(self, data: bytes) -> list[bytes]:
        """Count the replies ``data`` completes; the payloads of the sampled ones."""
        buf = self._buf + data
        out: list[bytes] = []
        if self._wanted is not None and (payload := _payload(buf, self._wanted)) is not None:
            out.append(payload)
            self._wanted = None
        scanned_to = self._scan_from
        pos = buf.find(_PMESSAGE, scanned_to)
        while pos != -1:
            self.count += 1
            scanned_to = pos + len(_PMESSAGE)
            if self.count % self.sample == 0 and self._wanted is None:
                if (payload := _payload(buf, pos)) is None:
                    self._wanted = pos  # its rest comes with a later chunk
                else:
                    out.append(payload)
            pos = buf.find(_PMESSAGE, scanned_to)
        # Keep what a later chunk may complete: a marker cut at the end, a sampled reply.
        tail = max(0, len(buf) - len(_PMESSAGE) + 1)
        keep = min(tail, self._wanted) if self._wanted is not None else tail
        self._buf = buf[keep:]
        self._scan_from = max(scanned_to, tail) - keep
        if self._wanted is not None:
            self._wanted -= keep
        return out


@functools.lru_cache(maxsize=64)
def _second_ns(prefix: str) -> int:
    return parse_rfc3339(f"{prefix}000000000Z")


def received_ns(text: str) -> int:
    """``received_at`` in ns: the pipeline writes it as ``format_ns`` does (a second, nine
    digits, ``Z``), and the second is parsed once (``parse_rfc3339`` took 4.7 µs; any other
    spelling still goes through it)."""
    if len(text) == 30 and text[29] == "Z" and text[19] == "." and text[20:29].isdigit():
        return _second_ns(text[:20]) + int(text[20:29])
    return parse_rfc3339(text)


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
        # A raw socket and a scanner: redis-py's PubSub costs several microseconds a
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
        # Timing one event in `sample` keeps the probe's own CPU small too.
        scanner = PmessageScanner(self.sample)
        sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                data = sock.recv(1 << 20)
            except TimeoutError:
                continue
            if not data:
                return
            sampled = scanner.feed(data)
            now = time.time_ns()
            self.count = scanner.count
            if self._measuring:
                for payload in sampled:
                    received = received_ns(orjson.loads(payload)["received_at"])
                    self.latencies_ms.append((now - received) / 1e6)
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
        self,
        client: Any,
        key: str,
        stream: str = "prices",
        drain: str | None = None,
        broker: Any = None,
    ) -> None:
        self._client, self._key, self._stream, self._drain = client, key, stream, drain
        self._broker = broker or client  # where the drained queue lives
        self._samples: list[tuple[float, int, int]] = []

    def sample(self) -> None:
        if self._drain:
            self._broker.unlink(self._drain)  # freed in Redis' background thread
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
