"""The naive design: pydantic models, one ``.delay()`` per message from inside the stream
handler, one HSET and one PUBLISH per task. What a first version usually looks like.

``python -m benchmarks.naive`` runs its producer; ``celery -A benchmarks.naive worker -Q
naive`` its worker.
"""

from __future__ import annotations

import json
import time
from functools import cache
from typing import Any

import redis
from alpaca.data.live.stock import StockDataStream
from pydantic import BaseModel

from alpaca_broker.keys import Keys
from alpaca_broker.redis_client import connect
from alpaca_broker.settings import load_settings
from alpaca_broker.timestamps import format_ns
from celery_app import app

QUEUE = "naive"
KEYS = Keys()


@cache
def _redis() -> redis.Redis:
    return connect(load_settings())


@app.task(name="naive.publish", queue=QUEUE)
def publish(event: dict[str, Any]) -> None:
    """One message: HSET the latest value, PUBLISH it; two round trips."""
    data = json.dumps(event)
    _redis().hset(KEYS.latest(event["symbol"]), event["type"], data)
    _redis().publish(KEYS.prices(event["symbol"]), data)


def _event(kind: str, model: BaseModel) -> dict[str, Any]:
    event = {"type": kind, **model.model_dump(mode="json")}
    event["received_at"] = format_ns(time.time_ns())
    return event


def main() -> None:
    """Subscribe with pydantic models and send one task per message, the naive way."""
    settings = load_settings()
    key, secret = settings.credentials()
    stream = StockDataStream(key, secret, url_override=settings.data_stream_url)

    async def on_trade(trade: BaseModel) -> None:
        publish.delay(_event("trade", trade))

    async def on_quote(quote: BaseModel) -> None:
        publish.delay(_event("quote", quote))

    stream.subscribe_trades(on_trade, *settings.alpaca_symbols)
    stream.subscribe_quotes(on_quote, *settings.alpaca_symbols)
    stream.run()


if __name__ == "__main__":
    main()
