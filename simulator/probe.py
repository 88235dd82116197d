"""A counting data-stream client, to measure the simulator's throughput.

    python -m simulator.probe ws://127.0.0.1:8765/v2/iex --seconds 10

Connects with plain websockets + msgpack (no alpaca-py, whose per-message dispatch would
be the bottleneck), authenticates, subscribes ``trades`` and ``quotes`` to ``*`` and
counts market messages.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import msgpack
from websockets.asyncio.client import connect


async def count_messages(
    url: str,
    seconds: float,
    *,
    compression: bool = True,
    key: str = "probe",
    secret: str = "probe",  # noqa: S107 (any key pair does, unless --key/--secret are set)
) -> tuple[int, int, float]:
    """(messages, frames, elapsed seconds) received over about ``seconds`` after the first
    market frame."""
    async with connect(
        url,
        additional_headers={"Content-Type": "application/msgpack"},
        compression="deflate" if compression else None,
        max_size=2**20,
        max_queue=1024,
    ) as ws:
        await ws.recv()
        await ws.send(msgpack.packb({"action": "auth", "key": key, "secret": secret}))
        reply = msgpack.unpackb(await ws.recv())
        if reply[0].get("T") != "success":
            raise RuntimeError(f"auth refused: {reply}")
        await ws.send(msgpack.packb({"action": "subscribe", "trades": ["*"], "quotes": ["*"]}))
        messages = frames = 0
        start = deadline = 0.0
        unpack = msgpack.unpackb
        while True:
            batch = unpack(await ws.recv())
            if batch and batch[0].get("T") in ("subscription", "success", "error"):
                continue
            if not start:
                start = time.monotonic()
                deadline = start + seconds
                continue
            messages += len(batch)
            frames += 1
            if frames % 64 == 0 and time.monotonic() >= deadline:
                return messages, frames, time.monotonic() - start


def main(argv: list[str] | None = None) -> int:
    """Measure and print the received message rate."""
    parser = argparse.ArgumentParser(prog="python -m simulator.probe", description=__doc__)
    parser.add_argument("url", help="data stream URL, e.g. ws://127.0.0.1:8765/v2/iex")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to count (10)")
    parser.add_argument("--no-compression", action="store_true", help="no permessage-deflate")
    args = parser.parse_args(argv)
    messages, frames, elapsed = asyncio.run(
        count_messages(args.url, args.seconds, compression=not args.no_compression)
    )
    print(
        f"received {messages:,} messages in {frames:,} frames over {elapsed:.1f} s: "
        f"{messages / elapsed:,.0f} msg/s ({messages / max(frames, 1):.0f} per frame)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
