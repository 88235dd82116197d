"""The Celery wire: JSON in, pickle refused, order tasks survive their worker being killed."""

from __future__ import annotations

import base64
import datetime
import pickle
import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
from kombu import Connection, Exchange, Producer
from kombu.utils import json as kombu_json

from alpaca_broker.errors import ConfigError, is_retryable
from alpaca_broker.keys import ORDERS_QUEUE, PRICES_QUEUE
from alpaca_broker.settings import Settings
from celery_app.config import celery_config, create_app, worker_broker
from celery_app.wire import dumps_json, loads_json
from producers.buffer import Message
from producers.handoff import batch_sender
from producers.streams import STREAMS
from tests.harness.wait import wait_until
from tests.harness.workers import process_env

PROBE_APP = "tests.harness.probe_tasks"


def _sender(redis_url: str):  # a client-side app, as a producer process would build it
    return create_app(Settings(REDIS_URL=redis_url, _env_file=None))


def _send_probe(redis_url: str, key: str, value: str, hold: bool = False) -> None:
    _sender(redis_url).send_task("orders.probe", args=[key, value], kwargs={"hold": hold})


def test_wire_accepts_json_only_and_ignores_results() -> None:
    config = celery_config(Settings(_env_file=None))
    assert config["accept_content"] == ["json"]
    assert config["task_serializer"] == "json"
    assert config["result_accept_content"] == ["json"]
    assert config["task_ignore_result"] is True


@pytest.mark.parametrize(
    "payload",
    [
        [[[1764000000123456789, {"T": "t", "S": "AAPL", "p": 187.5}]], {}],
        {"when": datetime.datetime(2026, 11, 24, 14, 30), "qty": Decimal("0.123456789")},
        {"id": uuid.UUID(int=7), "nested": [{"text": 'a "__type__" in a string'}]},
    ],
)
def test_the_fast_json_decoder_reads_what_kombu_writes_as_kombu_does(payload) -> None:
    body = kombu_json.dumps(payload, separators=(",", ":"))
    assert loads_json(body) == loads_json(body.encode()) == kombu_json.loads(body)


@pytest.mark.parametrize(
    "payload",
    [
        [[[1764000000123456789, "aGVsbG8="]], {}, {"callbacks": None, "chain": None}],
        {"qty": 1.5, "big": 2**70, "ok": True, "nested": [("a", 1), {"é": "ü"}]},
        {"when": datetime.datetime(2026, 11, 24, 14, 30), "qty": Decimal("0.1")},
        {"id": uuid.UUID(int=7), 1: "int key"},
    ],
)
def test_the_fast_json_encoder_writes_what_kombu_writes(payload) -> None:
    expected = kombu_json.loads(kombu_json.dumps(payload))
    written = dumps_json(payload)
    assert isinstance(written, str)
    assert kombu_json.loads(written) == expected
    assert dumps_json([float("nan")]) == "[NaN]"  # as kombu (orjson would write null)


def test_order_task_is_routed_to_orders_queue_with_late_ack(redis_url: str) -> None:
    app = create_app(Settings(REDIS_URL=redis_url, _env_file=None))

    @app.task(name="orders.routing_probe")
    def routing_probe() -> None: ...

    assert app.amqp.router.route({}, "orders.routing_probe")["queue"].name == ORDERS_QUEUE
    assert routing_probe.acks_late is True
    assert routing_probe.reject_on_worker_lost is True


def test_order_task_lands_in_the_orders_queue_only(redis_url, redis_client) -> None:
    _send_probe(redis_url, "q", "only-orders")
    assert redis_client.llen(ORDERS_QUEUE) == 1
    assert redis_client.llen(PRICES_QUEUE) == 0


def test_subprocess_worker_consumes_json_task_from_orders_queue(
    redis_url, redis_client, worker_factory
) -> None:
    worker_factory(redis_url, app=PROBE_APP, queues=ORDERS_QUEUE)
    _send_probe(redis_url, "k", "v1")
    wait_until(lambda: redis_client.lrange("k:done", 0, -1) == ["v1"], 15)


def test_pickle_message_is_refused_and_never_runs(redis_url, redis_client, worker_factory) -> None:
    worker = worker_factory(redis_url, app=PROBE_APP, queues=ORDERS_QUEUE)
    task_id = str(uuid.uuid4())
    with Connection(redis_url) as conn:
        producer = Producer(conn, exchange=Exchange(ORDERS_QUEUE, type="direct"))
        producer.publish(
            pickle.dumps((["p", "evil"], {}, {})),
            routing_key=ORDERS_QUEUE,
            content_type="application/x-python-serialize",
            content_encoding="binary",
            headers={"task": "orders.probe", "id": task_id, "lang": "py"},
            declare=[],
        )
    # A JSON task sent after it runs, so the worker has seen (and refused) the pickle one.
    _send_probe(redis_url, "j", "after")
    wait_until(lambda: redis_client.lrange("j:done", 0, -1) == ["after"], 15)
    assert redis_client.lrange("p:started", 0, -1) == []
    wait_until(lambda: "untrusted content" in worker.log().lower(), 5, message=worker.log())


def test_order_task_is_redelivered_when_its_pool_child_is_sigkilled(
    redis_url, redis_client, worker_factory
) -> None:
    worker = worker_factory(redis_url, app=PROBE_APP, queues=ORDERS_QUEUE)
    _send_probe(redis_url, "o", "order-1", hold=True)
    wait_until(lambda: redis_client.llen("o:started") == 1, 15)
    worker.kill_children()
    wait_until(lambda: redis_client.llen("o:started") == 2, 20, message="redelivered")
    redis_client.rpush("o:release", "go")
    wait_until(lambda: redis_client.lrange("o:done", 0, -1) == ["order-1"], 15)


@pytest.mark.slow
def test_order_task_survives_whole_worker_sigkill_and_runs_on_next_worker(
    redis_url, redis_client, worker_factory
) -> None:
    short = {"CELERY_VISIBILITY_TIMEOUT": "3"}
    first = worker_factory(redis_url, app=PROBE_APP, queues=ORDERS_QUEUE, env=short, name="a")
    _send_probe(redis_url, "w", "order-2", hold=True)
    wait_until(lambda: redis_client.llen("w:started") == 1, 15)
    first.kill()
    redis_client.rpush("w:release", "go")  # the next run must not block
    worker_factory(redis_url, app=PROBE_APP, queues=ORDERS_QUEUE, env=short, name="b")
    wait_until(lambda: redis_client.lrange("w:done", 0, -1) == ["order-2"], 30)
    assert redis_client.llen("w:started") == 2


def test_a_price_backlog_goes_out_as_several_tasks_in_order(redis_url: str, redis_client) -> None:
    send = batch_sender(_sender(redis_url), "prices.publish_batch", "us_equity", ("t",), 2)
    send([Message(1_000 + i, {"T": "t", "S": "AAPL", "i": i}) for i in range(5)])
    queued = reversed(redis_client.lrange(PRICES_QUEUE, 0, -1))
    bodies = [kombu_json.loads(raw)["body"] for raw in queued]
    tasks = [kombu_json.loads(base64.b64decode(body))[0][0] for body in bodies]
    assert [[item[1]["i"] for item in items] for items in tasks] == [[0, 1], [2, 3], [4]]


def test_a_price_backlog_sent_to_an_unreachable_broker_fails_retryably() -> None:
    send = batch_sender(
        _sender("redis://127.0.0.1:1/0"), "prices.publish_batch", "us_equity", ("t",), 2
    )
    with pytest.raises(Exception) as failed:
        send([Message(1_000 + i, {"T": "t", "S": "AAPL", "i": i}) for i in range(5)])
    assert is_retryable(failed.value), repr(failed.value)


def test_a_channel_sends_through_one_client_until_its_pool_is_replaced(redis_url: str) -> None:
    app = _sender(redis_url)  # installs the broker changes
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
            assert first is second
            first.ping()
        channel._disconnect_pools()  # what kombu does after a connection error
        with channel.conn_or_acquire() as fresh:
            assert fresh is not first
            assert fresh.connection_pool is channel.pool
            assert fresh.ping()


PRICES_BROKER = "redis://127.0.0.1:6390/0"


def _apart(broker: str | None = None) -> Settings:
    return Settings(
        _env_file=None,
        REDIS_URL="redis://127.0.0.1:6379/0",
        CELERY_BROKER_URL=broker,
        CELERY_PRICES_BROKER_URL=PRICES_BROKER,
    )


def test_prices_on_a_broker_of_their_own_go_there_and_everything_else_stays() -> None:
    settings = _apart()
    assert settings.prices_broker_apart
    assert celery_config(settings, PRICES_QUEUE)["broker_url"] == PRICES_BROKER
    assert celery_config(settings)["broker_url"] == settings.redis_url
    assert worker_broker(settings, [PRICES_QUEUE])["broker_url"] == PRICES_BROKER
    assert worker_broker(settings, "orders") == {}


@pytest.mark.parametrize("queues", [["prices", "orders"], "prices,orders", None, []])
def test_a_worker_mixing_prices_with_other_queues_is_refused_when_prices_have_their_own_broker(
    queues: object,
) -> None:
    with pytest.raises(ConfigError, match="CELERY_PRICES_BROKER_URL"):
        worker_broker(_apart(), queues)
    alone = Settings(_env_file=None, REDIS_URL="redis://127.0.0.1:6379/0")
    assert worker_broker(alone, queues) == {}


def test_a_prices_broker_equal_to_the_broker_is_no_broker_of_their_own() -> None:
    settings = _apart(broker=PRICES_BROKER)
    assert not settings.prices_broker_apart
    assert worker_broker(settings, None) == {}


def test_a_mixed_worker_with_a_prices_broker_of_their_own_exits_2_with_one_line(
    tmp_path: Path,
) -> None:
    env = process_env("redis://127.0.0.1:1/0", CELERY_PRICES_BROKER_URL=PRICES_BROKER)
    argv = [sys.executable, "-m", "celery", "-A", "celery_app", "worker", "-Q", "prices,orders"]
    done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "alpaca-broker: configuration error: CELERY_PRICES_BROKER_URL: gives the 'prices' queue a "
        "broker of its own: consume it in a worker of its own (-Q prices), and the other queues "
        "in another (-Q orders)"
    ]


def test_each_stream_kind_knows_the_queue_celery_routes_its_tasks_to() -> None:
    app = create_app(Settings(_env_file=None, REDIS_URL="redis://127.0.0.1:6379/0"))
    queues = {name: kind.queue for name, kind in STREAMS.items()}
    assert queues == {
        "prices": PRICES_QUEUE, "crypto": PRICES_QUEUE, "options": PRICES_QUEUE,
        "orders": ORDERS_QUEUE, "news": ORDERS_QUEUE,
    }  # fmt: skip
    for kind in STREAMS.values():
        assert app.amqp.router.route({}, kind.task)["queue"].name == kind.queue
