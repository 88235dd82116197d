"""CPU per 1,000 market messages of each stage, before (per-message hand-off) and after
(per-frame hand-off), on 100-message frames like the simulator's at high rates.

``python -m benchmarks.stage_cost`` prints microseconds per 1,000 messages: the producer's
read-loop work plus its hand-off encoding (before: JSON of each message; after: the frame
check, base64, the task body and its Redis envelope), and the worker's decode + normalize
(``prepare_batch``). Redis (the price Lua script) is the same both ways.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable

import msgpack

from alpaca_broker.schema import REQUIRED_KEYS
from celery_app.wire import dumps_json
from producers.buffer import Message
from producers.frames import Frame, clean_count, parse_frame, wire_models
from producers.handoff import to_wire
from tasks.price_frames import prepare_batch

N_FRAMES, PER_FRAME = 200, 100


def _frames() -> list[bytes]:
    ts = msgpack.Timestamp(1796000000, 123456789)
    trade = {"T": "t", "S": "SY001", "i": 52983525029461, "x": "V", "p": 187.49, "s": 100,
             "c": ["@"], "t": ts, "z": "C"}  # fmt: skip
    quote = {"T": "q", "S": "SY002", "bx": "V", "bp": 187.48, "bs": 2, "ax": "V",
             "ap": 187.5, "as": 3, "c": ["R"], "t": ts, "z": "C"}  # fmt: skip
    return [msgpack.packb([trade, quote] * (PER_FRAME // 2)) for _ in range(N_FRAMES)]


def _before(frames: list[bytes]) -> list[list[object]]:
    out: list[Message] = []
    for frame in frames:
        for msg in parse_frame(frame, REQUIRED_KEYS).market:
            out.append(Message(1, msg))
    items: list[list[object]] = [[m.received_ns, to_wire(m.payload)] for m in out]
    json.dumps([items, "us_equity"])
    return items


def _after(frames: list[bytes]) -> list[list[object]]:
    wire = wire_models(REQUIRED_KEYS)  # as a read loop holds it
    out = [Message(1, Frame(f, clean_count(f, wire))) for f in frames]
    items: list[list[object]] = [
        [m.received_ns, base64.b64encode(m.payload.data).decode("ascii")] for m in out
    ]
    # The task body, then the Redis envelope around its base64, as the hand-off writes them.
    for start in range(0, len(items), 5):  # 500-message tasks
        body = dumps_json([[items[start : start + 5]], {}, {}])
        dumps_json({"body": base64.b64encode(body.encode()).decode(), "headers": {}})
    return items


def _per_1000(fn: Callable[[], object], rounds: int = 5) -> float:
    best = float("inf")
    for _ in range(rounds):
        began = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - began)
    return best * 1e6 / (N_FRAMES * PER_FRAME) * 1000


def main() -> int:
    frames = _frames()
    old, new = _before(frames), _after(frames)
    print("stage (µs CPU per 1,000 messages) | before | after")
    print(f"producer read loop + hand-off    | {_per_1000(lambda: _before(frames)):6.0f} | "
          f"{_per_1000(lambda: _after(frames)):5.0f}")  # fmt: skip
    print(f"worker decode + normalize        | {_per_1000(lambda: prepare_batch(old)):6.0f} | "
          f"{_per_1000(lambda: prepare_batch(new)):5.0f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
