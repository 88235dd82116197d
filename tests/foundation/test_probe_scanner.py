"""The bench probe's reply scanner against hiredis, on one RESP stream cut at random."""

from __future__ import annotations

import json
import random

import hiredis
import pytest

from alpaca_broker.timestamps import format_ns, parse_rfc3339
from benchmarks.probes import PmessageScanner, received_ns


def _bulk(raw: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(raw), raw)


def _stream(count: int, rng: random.Random) -> tuple[bytes, list[bytes]]:
    """A PSUBSCRIBE confirmation, then ``count`` pmessage replies of assorted sizes (some
    payloads spelling the reply marker inside JSON strings, escaped as JSON has it)."""
    out = [b"*3\r\n" + _bulk(b"psubscribe") + _bulk(b"P:prices:*") + b":1\r\n"]
    payloads = []
    for i in range(count):
        note = "*4\r\n$8\r\npmessage\r\n" if i % 7 == 0 else "x" * rng.randrange(0, 3000)
        payload = json.dumps({"i": i, "received_at": "2026-11-30T13:00:00Z", "n": note})
        payloads.append(payload.encode())
        channel = f"P:prices:SY{i % 50:03d}".encode()
        out.append(b"*4\r\n" + _bulk(b"pmessage") + _bulk(b"P:prices:*") + _bulk(channel))
        out.append(_bulk(payloads[-1]))
    return b"".join(out), payloads


def _hiredis_payloads(stream: bytes) -> list[bytes]:
    reader = hiredis.Reader()
    reader.feed(stream)
    found = []
    while (reply := reader.gets()) is not False:
        if isinstance(reply, list) and reply[0] == b"pmessage":
            found.append(reply[3])
    return found


@pytest.mark.parametrize("sample", [1, 3, 8])
@pytest.mark.parametrize("seed", range(6))
def test_scanner_counts_and_samples_as_hiredis_reads_however_the_stream_is_cut(
    sample: int, seed: int
) -> None:
    rng = random.Random(seed)
    stream, payloads = _stream(400, rng)
    assert _hiredis_payloads(stream) == payloads
    scanner = PmessageScanner(sample)
    sampled: list[bytes] = []
    at = 0
    while at < len(stream):
        size = rng.choice([1, 2, 7, 19, 300, 4096, 70000])
        sampled += scanner.feed(stream[at : at + size])
        at += size
    assert scanner.count == len(payloads)
    assert sampled == payloads[sample - 1 :: sample]


@pytest.mark.parametrize("seed", range(3))
def test_probe_reads_received_at_as_the_exact_parser_does(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(2000):
        ns = rng.randrange(0, 4_000_000_000 * 10**9)
        assert received_ns(format_ns(ns)) == ns
    for text in ("2026-11-30T13:00:00Z", "2026-11-30T13:00:00.5+01:00", "2026-11-30t13:00:00.1Z"):
        assert received_ns(text) == parse_rfc3339(text)
