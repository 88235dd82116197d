"""Every Redis client of every process comes from :func:`connect`: plain, or through Sentinel.

With ``REDIS_SENTINELS`` and ``REDIS_SENTINEL_MASTER`` set, the client asks the Sentinels
for the primary's address on each new connection (redis-py's ``Sentinel.master_for``):

* a connection error closes the connection, and the next command (redis-py retries each
  command itself, then the caller's own retry) connects to whatever primary the
  Sentinels name then, so a failover is followed without a restart;
* a demoted primary answering ``READONLY`` is turned into a ``ConnectionError`` by
  redis-py's ``SentinelManagedConnection`` (it disconnects and asks again), so callers see
  a retryable fault (:func:`alpaca_broker.errors.is_retryable`) and never write to a replica.

``REDIS_URL`` still gives the password, the username, the database and TLS (``rediss://``);
its host and port are ignored. The Celery broker's equivalent is :func:`broker_options`:
the broker goes through the Sentinels too, unless ``CELERY_BROKER_URL`` names a Redis other
than ``REDIS_URL``'s (``Settings.broker_is_output``).
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Final
from urllib.parse import quote, unquote, urlsplit

import redis
from redis.sentinel import Sentinel

from alpaca_broker.redis_server import masked
from alpaca_broker.settings import Settings, redis_identity

log = logging.getLogger(__name__)

SENTINEL_TIMEOUT: Final = 1.0
"""Seconds a Sentinel may take to answer (connect or reply) before the next one is asked."""


def url_options(url: str) -> dict[str, Any]:
    """The connection options of ``url`` that are not its address: auth, database, TLS."""
    parts = urlsplit(url)
    options: dict[str, Any] = {}
    if parts.username:
        options["username"] = unquote(parts.username)
    if parts.password:
        options["password"] = unquote(parts.password)
    options["db"] = redis_identity(url)[3]  # the path, or ?db=
    if parts.scheme == "rediss":
        options["ssl"] = True
    return options


def sentinel_manager(settings: Settings, **options: Any) -> Sentinel:
    """A redis-py ``Sentinel`` for ``REDIS_SENTINELS``; ``options`` go to the data connections."""
    return Sentinel(
        list(settings.sentinel_addresses),
        sentinel_kwargs={
            "socket_timeout": SENTINEL_TIMEOUT,
            "socket_connect_timeout": SENTINEL_TIMEOUT,
        },
        **options,
    )


def connect(settings: Settings, **options: Any) -> redis.Redis:
    """A Redis client for ``settings``: through Sentinel when configured, else ``REDIS_URL``.

    ``options`` are redis-py connection options (``decode_responses``, ``socket_timeout``...).
    """
    if not settings.redis_sentinels:
        return redis.Redis.from_url(settings.redis_url, **options)
    assert settings.redis_sentinel_master, "load_settings checks the master name"
    manager = sentinel_manager(settings)
    merged = {**url_options(settings.redis_url), **options}
    client: redis.Redis = manager.master_for(settings.redis_sentinel_master, **merged)
    return client


def describe(settings: Settings) -> str:
    """Where :func:`connect` goes, for messages (the password masked, as everywhere)."""
    if settings.redis_sentinels:
        return f"sentinel {settings.redis_sentinel_master}@{','.join(settings.redis_sentinels)}"
    return masked(settings.redis_url)


def require(command: str, settings: Settings, timeout: float = 3.0) -> None:
    """Return when Redis (through Sentinel when configured) answers PING; else print one line
    naming where it looked and exit 1."""
    client = connect(settings, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(
            f"alpaca-broker {command}: cannot reach Redis at {describe(settings)}: {why}",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(1) from None
    finally:
        client.close()


def broker_options(settings: Settings) -> tuple[str, dict[str, Any]] | None:
    """The Celery broker through Sentinel: (``broker_url``, extra transport options), or None
    when Sentinel is not configured or the broker is elsewhere.

    With Sentinel, the broker is found through the Sentinels whenever it is the output Redis
    (``Settings.broker_is_output``: ``CELERY_BROKER_URL`` unset, or naming the same server and
    database as ``REDIS_URL``, however spelled); only a broker elsewhere keeps its own URL.
    A static URL for the output Redis would keep sending tasks to the old primary after a
    failover.

    kombu's ``sentinel://`` transport takes each Sentinel as one ``;``-separated URL; the
    primary's password and database ride on the URLs (kombu passes them to ``master_for``),
    the Sentinels' own connection options in ``sentinel_kwargs``. The credentials are the
    broker URL's own (``CELERY_BROKER_URL`` when set: it may name another user).
    """
    if not settings.redis_sentinels or not settings.broker_is_output:
        return None
    url = settings.broker_url
    parts = urlsplit(url)
    auth = ""
    if parts.password:
        user = quote(unquote(parts.username), safe="") if parts.username else ""
        auth = f"{user}:{quote(unquote(parts.password), safe='')}@"
    db = url_options(url)["db"]
    urls = ";".join(f"sentinel://{auth}{address}/{db}" for address in settings.redis_sentinels)
    transport = {
        "master_name": settings.redis_sentinel_master,
        "sentinel_kwargs": {
            "socket_timeout": SENTINEL_TIMEOUT,
            "socket_connect_timeout": SENTINEL_TIMEOUT,
        },
    }
    return urls, transport
