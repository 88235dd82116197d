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

TLS: every connection to a ``rediss://`` Redis, and to the Sentinels when they speak TLS
(``Settings.sentinel_tls``), verifies the server's certificate and host name
(:func:`tls_options`, the ``REDIS_TLS_*`` settings): the output client here, the Celery
broker (:func:`broker_tls`, Celery's ``broker_use_ssl``: kombu alone accepts any certificate),
plain or through Sentinel, and ``health``'s clients of the brokers (:func:`from_url`).
"""

from __future__ import annotations

import logging
import re
import ssl
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


def uses_tls(url: str) -> bool:
    """Whether ``url`` is a ``rediss://`` URL."""
    return urlsplit(url).scheme == "rediss"


def tls_options(settings: Settings) -> dict[str, Any]:
    """redis-py's options of a TLS connection (also kombu's ``broker_use_ssl``): the server's
    certificate verified against ``REDIS_TLS_CA_FILE`` (else the system's CAs) and its host
    name checked (unless ``REDIS_TLS_CHECK_HOSTNAME`` is false); ``REDIS_TLS_CERT_FILE`` and
    ``REDIS_TLS_KEY_FILE`` as the client's certificate."""
    options: dict[str, Any] = {
        "ssl_cert_reqs": ssl.CERT_REQUIRED,
        "ssl_check_hostname": settings.redis_tls_check_hostname,
    }
    if settings.redis_tls_ca_file:
        options["ssl_ca_certs"] = str(settings.redis_tls_ca_file)
    if settings.redis_tls_cert_file:
        options["ssl_certfile"] = str(settings.redis_tls_cert_file)
    if settings.redis_tls_key_file:
        options["ssl_keyfile"] = str(settings.redis_tls_key_file)
    return options


def sentinel_options(settings: Settings) -> dict[str, Any]:
    """The options of every connection to a Sentinel (redis-py's and kombu's
    ``sentinel_kwargs``): short timeouts, ``REDIS_SENTINEL_PASSWORD``, and TLS verified as
    :func:`tls_options` says when the Sentinels speak TLS (``Settings.sentinel_tls``)."""
    options: dict[str, Any] = {
        "socket_timeout": SENTINEL_TIMEOUT,
        "socket_connect_timeout": SENTINEL_TIMEOUT,
    }
    if settings.redis_sentinel_password:
        options["password"] = settings.redis_sentinel_password.get_secret_value()
    if settings.sentinel_tls:
        options.update(ssl=True, **tls_options(settings))
    return options


def sentinel_manager(settings: Settings, **options: Any) -> Sentinel:
    """A redis-py ``Sentinel`` for ``REDIS_SENTINELS``; ``options`` go to the data connections."""
    return Sentinel(
        list(settings.sentinel_addresses), sentinel_kwargs=sentinel_options(settings), **options
    )


def from_url(settings: Settings, url: str, **options: Any) -> redis.Redis:
    """A client of the Redis at ``url`` itself (never through Sentinel), verified as
    :func:`tls_options` says when ``url`` is ``rediss://``; ``options`` as :func:`connect`'s."""
    if uses_tls(url):
        options = {**tls_options(settings), **options}
    return redis.Redis.from_url(url, **options)


def connect(settings: Settings, **options: Any) -> redis.Redis:
    """A Redis client for ``settings``: through Sentinel when configured, else ``REDIS_URL``.

    ``options`` are redis-py connection options (``decode_responses``, ``socket_timeout``...).
    """
    if not settings.redis_sentinels:
        return from_url(settings, settings.redis_url, **options)
    assert settings.redis_sentinel_master, "load_settings checks the master name"
    manager = sentinel_manager(settings)
    merged = {**url_options(settings.redis_url), **options}
    if merged.get("ssl"):
        merged = {**tls_options(settings), **merged}
    client: redis.Redis = manager.master_for(settings.redis_sentinel_master, **merged)
    return client


def describe(settings: Settings) -> str:
    """Where :func:`connect` goes, for messages (the password masked, as everywhere)."""
    if settings.redis_sentinels:
        return f"sentinel {settings.redis_sentinel_master}@{','.join(settings.redis_sentinels)}"
    return masked(settings.redis_url)


# redis-py names each Sentinel that failed by its client's repr (every connection option).
_SENTINEL_CLIENT = re.compile(r"<redis\.client\.Redis\(.*?,host=([^,]*),port=(\d+),.*?\)>\)>\)>")


def reason(exc: BaseException) -> str:
    """The first line of a Redis error, each Sentinel in it named by its address only."""
    text = str(exc).strip()
    why = text.splitlines()[0] if text else type(exc).__name__
    return _SENTINEL_CLIENT.sub(lambda m: f"Sentinel {m.group(1)}:{m.group(2)}", why)


def require(command: str, settings: Settings, timeout: float = 3.0) -> None:
    """Return when Redis (through Sentinel when configured) answers PING; else print one line
    naming where it looked and exit 1."""
    client = connect(settings, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        why = reason(exc)
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
    the Sentinels' own connection options (:func:`sentinel_options`) in ``sentinel_kwargs``.
    The credentials are the broker URL's own (``CELERY_BROKER_URL`` when set: it may name
    another user), and so is TLS to the primary (:func:`broker_tls` of that URL: a
    ``sentinel://`` URL cannot say it).
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
        "sentinel_kwargs": sentinel_options(settings),
    }
    return urls, transport


def broker_tls(settings: Settings, url: str) -> dict[str, Any] | bool:
    """Celery's ``broker_use_ssl`` for the broker whose URL is ``url`` (through Sentinel: the
    URL that gives its credentials): :func:`tls_options` for ``rediss://``, else False. Left
    unset, kombu connects to a ``rediss://`` broker accepting any certificate."""
    return tls_options(settings) if uses_tls(url) else False
