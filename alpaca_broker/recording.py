"""The recording file format: raw WebSocket frames as a client received them.

Standard library only, so the producer can import it to record what it reads off its
sockets. A recording is UTF-8 JSON Lines (gzip-compressed when the name ends in ``.gz``):

* line 1, the header::

    {"format": "alpaca-broker-recording", "version": 1, "created_at": "<RFC 3339>",
     "meta": {...}}

* every further line, one frame, in the order received::

    {"ns": <int, receive time, ns since the epoch>, "stream": "<one of STREAMS>",
     "kind": "binary" | "text", "data": "<base64 for binary, the text itself for text>"}

  ``stream`` says which socket it came from (``data``: the stock market data stream, msgpack
  frames as alpaca-py asks for; ``crypto``, ``options``, ``news``: the other market data
  streams, msgpack too; ``trading``: ``trade_updates`` JSON, often in binary frames).
  Frames are stored whole and unchanged, control messages included; a reader decides what
  to do with them.

A recording may hold market data, so it is created readable by its owner only (mode 0600,
also enforced on an existing file), and never opened through a symbolic link. A writer
opened on an existing recording appends to it: the header stays the first line, and each
run's frames follow the previous run's.
"""

from __future__ import annotations

import base64
import errno
import gzip
import io
import json
import os
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

FORMAT = "alpaca-broker-recording"
VERSION = 1
STREAMS = ("data", "trading", "crypto", "options", "news")
FILE_MODE = 0o600


class RecordingError(ValueError):
    """A file that is not a readable recording, or a recording that cannot be written."""


@dataclass(frozen=True)
class RecordedFrame:
    """One frame: when it was received, from which stream, and its exact payload."""

    ns: int
    stream: str
    payload: bytes | str


def _open(path: Path, mode: str) -> IO[str]:
    if path.suffix == ".gz":
        text: IO[str] = gzip.open(path, mode + "t", encoding="utf-8")  # type: ignore[assignment]  # noqa: SIM115
        return text
    return path.open(mode, encoding="utf-8")


def _open_private(path: Path) -> tuple[IO[str], IO[bytes], bool]:
    """Open ``path`` for appending with mode 0600: the text file to write, the binary file
    under it (gzip does not close it) and whether it was empty.

    Never through a symbolic link (``O_NOFOLLOW``): one planted at the recording's path would
    have the producer write its market data, or append to a file of the link's choosing,
    wherever the link points. Raises RecordingError, one line, when the file cannot be opened.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW
    try:
        fd = os.open(path, flags, FILE_MODE)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a symbolic link
            raise RecordingError(
                f"{path}: is a symbolic link; a recording is never written through one"
            ) from None
        raise RecordingError(f"{path}: cannot open for recording: {exc.strerror}") from None
    try:
        os.fchmod(fd, FILE_MODE)  # an existing file keeps no wider mode
        empty = os.fstat(fd).st_size == 0
        raw = os.fdopen(fd, "ab")
    except BaseException:
        os.close(fd)
        raise
    if path.suffix == ".gz":  # one gzip member per run; readers see one stream
        text: IO[str] = gzip.open(raw, "at", encoding="utf-8")  # noqa: SIM115
        return text, raw, empty
    return io.TextIOWrapper(raw, encoding="utf-8"), raw, empty


class RecordingWriter:
    """Appends frames to a recording (created 0600 with its header when new). Thread-safe
    (one writer for every stream).

    Use as a context manager, or call ``close()``. ``flush_every`` frames are buffered
    before a flush (1 = every frame reaches the OS at once).
    """

    def __init__(
        self, path: str | Path, *, meta: Mapping[str, Any] | None = None, flush_every: int = 1
    ) -> None:
        self.path = Path(path)
        self._file, self._raw, empty = _open_private(self.path)
        self._lock = threading.Lock()
        self._flush_every = max(1, flush_every)
        self._pending = 0
        self.frames = 0
        header = {
            "format": FORMAT,
            "version": VERSION,
            "created_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "meta": dict(meta or {}),
        }
        if empty:
            self._file.write(json.dumps(header) + "\n")
            self._file.flush()

    def write(self, stream: str, payload: bytes | str, received_ns: int | None = None) -> None:
        """Record one frame from ``stream`` (one of ``STREAMS``) as received."""
        if stream not in STREAMS:
            raise ValueError(f"stream must be one of {STREAMS}, not {stream!r}")
        if isinstance(payload, str):
            kind, data = "text", payload
        else:
            kind, data = "binary", base64.b64encode(bytes(payload)).decode("ascii")
        line = json.dumps(
            {"ns": received_ns or time.time_ns(), "stream": stream, "kind": kind, "data": data}
        )
        with self._lock:
            self._file.write(line + "\n")
            self.frames += 1
            self._pending += 1
            if self._pending >= self._flush_every:
                self._file.flush()
                self._pending = 0

    def close(self) -> None:
        """Flush and close the file."""
        with self._lock:
            if not self._file.closed:
                self._file.close()
            if not self._raw.closed:
                self._raw.close()

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RecordingReader:
    """Reads a recording: ``header`` at once, frames by iterating."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        with _open(self.path, "r") as file:
            first = file.readline()
        try:
            header = json.loads(first)
        except ValueError:
            raise RecordingError(f"{self.path}: not a recording (bad header line)") from None
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise RecordingError(f"{self.path}: not an {FORMAT} file")
        if header.get("version") != VERSION:
            raise RecordingError(f"{self.path}: unsupported version {header.get('version')!r}")
        self.header: dict[str, Any] = header

    def __iter__(self) -> Iterator[RecordedFrame]:
        with _open(self.path, "r") as file:
            file.readline()
            for number, line in enumerate(file, start=2):
                if line.strip():
                    yield _frame(line, f"{self.path}:{number}")


def _frame(line: str, where: str) -> RecordedFrame:
    try:
        row = json.loads(line)
        payload: bytes | str = (
            base64.b64decode(row["data"]) if row["kind"] == "binary" else str(row["data"])
        )
        if row["stream"] not in STREAMS or row["kind"] not in ("binary", "text"):
            raise ValueError(row["stream"])
        return RecordedFrame(int(row["ns"]), row["stream"], payload)
    except (ValueError, KeyError, TypeError) as exc:
        raise RecordingError(f"{where}: bad frame line ({exc})") from None


def read_recording(path: str | Path) -> list[RecordedFrame]:
    """Every frame of the recording at ``path``."""
    return list(RecordingReader(path))
