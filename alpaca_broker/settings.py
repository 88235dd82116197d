"""One typed, frozen settings object built from the environment and `.env`.

The variable names are the external contract (`shared/contract.md`); the tuning knobs below
the contract's are this project's additions, documented in the README. Nothing else in the
code base reads the environment.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
import sys
import time
from functools import cache
from pathlib import Path
from typing import Annotated, Literal, NoReturn
from urllib.parse import parse_qs, urlsplit

from alpaca.common.enums import BaseURL
from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from alpaca_broker.errors import ConfigError
from alpaca_broker.redaction import url_secrets

DataChannel = Literal["trades", "quotes", "bars", "updated_bars", "daily_bars", "statuses", "lulds"]
CryptoChannel = Literal["trades", "quotes", "bars", "updated_bars", "daily_bars", "orderbooks"]
OptionChannel = Literal["trades", "quotes"]
StockFeed = Literal["iex", "sip", "delayed_sip", "boats", "overnight"]
"""ALPACA_FEED: alpaca-py's ``DataFeed`` values that have a stock stream (not ``otc``)."""
FEED_PATHS: dict[str, str] = {
    "iex": "v2/iex",
    "sip": "v2/sip",
    "delayed_sip": "v2/delayed_sip",
    "boats": "v1beta1/boats",
    "overnight": "v1beta1/overnight",
}
"""Each stock feed's stream path on Alpaca (``boats`` and ``overnight`` are ``v1beta1``)."""
MARKET_DATA_STREAM = "wss://stream.data.alpaca.markets"
MIN_CREDENTIAL_CHARS = 8
"""Shortest Alpaca key or secret accepted (Settings.credentials)."""


def _env(name: str, *aliases: str) -> AliasChoices:
    return AliasChoices(name, *aliases)


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


def _check_url(value: str | None, schemes: tuple[str, ...]) -> str | None:
    if value is None or value == "":
        return None
    parts = urlsplit(value)
    if parts.scheme not in schemes or not (parts.hostname or parts.scheme == "unix"):
        raise ValueError(f"must be a {' or '.join(s + '://' for s in schemes)} URL")
    return value


def redis_identity(url: str) -> tuple[str, str, int, int]:
    """Which Redis and database a ``redis://``, ``rediss://`` or ``unix://`` URL names:
    (kind, host or socket path, port, db), whatever its credentials and spelling.

    The host is lower-cased without a trailing dot, every loopback name (``localhost``,
    ``127.0.0.1``, ``::1``) is one, the port defaults to 6379 and the database (path or
    ``?db=``) to 0. Purely textual: no name is resolved, so two names of one host that only
    DNS knows to be one stay two."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    path = parts.path.strip("/")
    db_text = query["db"][0] if "db" in query else ("" if parts.scheme == "unix" else path)
    db = int(db_text) if db_text.isdigit() else 0
    if parts.scheme == "unix":
        return "unix", parts.path, 0, db
    host = (parts.hostname or "").rstrip(".")
    try:
        if host == "localhost" or ipaddress.ip_address(host).is_loopback:
            host = "localhost"
    except ValueError:
        pass  # a name, not an address
    try:
        port = parts.port or 6379
    except ValueError:  # not a number: nothing else can name the same server
        return "tcp", url, 0, db
    return "tcp", host, port, db


def same_redis(a: str, b: str) -> bool:
    """Whether two Redis URLs name the same server and database (:func:`redis_identity`)."""
    return redis_identity(a) == redis_identity(b)


def parse_address(address: str) -> tuple[str, int]:
    """``host:port`` (IPv6 as ``[::1]:26379``) -> (host, port); ValueError when malformed."""
    host, sep, port = address.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{address!r} is not host:port")
    return host, int(port)


class Settings(BaseSettings):
    """Every setting of every process; build it with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        frozen=True,
        extra="ignore",
        case_sensitive=True,
        populate_by_name=False,
        hide_input_in_errors=True,  # a rejected value may be a secret
    )

    # --- the contract ---
    alpaca_api_key: SecretStr | None = Field(
        None, validation_alias=_env("ALPACA_API_KEY", "APCA_API_KEY_ID")
    )
    alpaca_secret_key: SecretStr | None = Field(
        None, validation_alias=_env("ALPACA_SECRET_KEY", "APCA_API_SECRET_KEY")
    )
    alpaca_paper: bool = Field(True, validation_alias=_env("ALPACA_PAPER"))
    alpaca_feed: StockFeed = Field("iex", validation_alias=_env("ALPACA_FEED"))
    alpaca_symbols: Annotated[tuple[str, ...], NoDecode] = Field(
        ("SPY",), validation_alias=_env("ALPACA_SYMBOLS"), min_length=1
    )
    alpaca_data_channels: Annotated[tuple[DataChannel, ...], NoDecode] = Field(
        ("trades", "quotes", "bars"), validation_alias=_env("ALPACA_DATA_CHANNELS"), min_length=1
    )
    alpaca_data_stream_url: str | None = Field(
        None, validation_alias=_env("ALPACA_DATA_STREAM_URL")
    )
    alpaca_trading_stream_url: str | None = Field(
        None, validation_alias=_env("ALPACA_TRADING_STREAM_URL")
    )
    alpaca_trading_api_url: str | None = Field(
        None, validation_alias=_env("ALPACA_TRADING_API_URL")
    )
    # URLs may carry a password, so they stay out of repr.
    redis_url: str = Field(
        "redis://localhost:6379/0", validation_alias=_env("REDIS_URL"), repr=False
    )
    celery_broker_url: str | None = Field(
        None, validation_alias=_env("CELERY_BROKER_URL"), repr=False
    )
    celery_prices_broker_url: str | None = Field(
        None, validation_alias=_env("CELERY_PRICES_BROKER_URL"), repr=False
    )
    redis_sentinels: Annotated[tuple[str, ...], NoDecode] = Field(
        (), validation_alias=_env("REDIS_SENTINELS")
    )
    redis_sentinel_master: str | None = Field(
        None, validation_alias=_env("REDIS_SENTINEL_MASTER"), pattern=r"^[A-Za-z0-9_.-]*$"
    )
    redis_key_prefix: str = Field(
        "alpaca",
        validation_alias=_env("REDIS_KEY_PREFIX"),
        min_length=1,
        pattern=r"^[^\s:*?\[\]]+$",
    )

    alpaca_data_api_url: str | None = Field(None, validation_alias=_env("ALPACA_DATA_API_URL"))
    alpaca_crypto_symbols: Annotated[tuple[str, ...], NoDecode] = Field(
        (), validation_alias=_env("ALPACA_CRYPTO_SYMBOLS")
    )
    alpaca_crypto_channels: Annotated[tuple[CryptoChannel, ...], NoDecode] = Field(
        ("trades", "quotes", "bars"), validation_alias=_env("ALPACA_CRYPTO_CHANNELS"), min_length=1
    )
    alpaca_crypto_stream_url: str = Field(
        f"{MARKET_DATA_STREAM}/v1beta3/crypto/us", validation_alias=_env("ALPACA_CRYPTO_STREAM_URL")
    )
    alpaca_option_symbols: Annotated[tuple[str, ...], NoDecode] = Field(
        (), validation_alias=_env("ALPACA_OPTION_SYMBOLS")
    )
    alpaca_option_channels: Annotated[tuple[OptionChannel, ...], NoDecode] = Field(
        ("trades", "quotes"), validation_alias=_env("ALPACA_OPTION_CHANNELS"), min_length=1
    )
    alpaca_option_feed: Literal["indicative", "opra"] = Field(
        "indicative", validation_alias=_env("ALPACA_OPTION_FEED")
    )
    alpaca_option_stream_url: str | None = Field(
        None, validation_alias=_env("ALPACA_OPTION_STREAM_URL")
    )
    alpaca_news_symbols: Annotated[tuple[str, ...], NoDecode] = Field(
        ("*",), validation_alias=_env("ALPACA_NEWS_SYMBOLS"), min_length=1
    )
    alpaca_news_stream_url: str = Field(
        f"{MARKET_DATA_STREAM}/v1beta1/news", validation_alias=_env("ALPACA_NEWS_STREAM_URL")
    )
    producer_lease: str | None = Field(
        None, validation_alias=_env("PRODUCER_LEASE"), pattern=r"^[A-Za-z0-9_.-]+$"
    )
    lease_ttl: float = Field(5.0, validation_alias=_env("LEASE_TTL"), ge=1, le=300)

    # --- this project's additions (README, "Configuration") ---
    # TLS of every rediss:// connection (output, brokers, Sentinel): the certificate and the
    # host name are always verified, against REDIS_TLS_CA_FILE or else the system's CAs.
    redis_tls_ca_file: Path | None = Field(None, validation_alias=_env("REDIS_TLS_CA_FILE"))
    redis_tls_cert_file: Path | None = Field(None, validation_alias=_env("REDIS_TLS_CERT_FILE"))
    redis_tls_key_file: Path | None = Field(None, validation_alias=_env("REDIS_TLS_KEY_FILE"))
    redis_tls_check_hostname: bool = Field(True, validation_alias=_env("REDIS_TLS_CHECK_HOSTNAME"))
    # The Sentinels' own password and TLS (default: TLS when REDIS_URL is rediss://).
    redis_sentinel_password: SecretStr | None = Field(
        None, validation_alias=_env("REDIS_SENTINEL_PASSWORD")
    )
    redis_sentinel_tls: bool | None = Field(None, validation_alias=_env("REDIS_SENTINEL_TLS"))
    log_format: Literal["text", "json"] = Field("text", validation_alias=_env("LOG_FORMAT"))
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", validation_alias=_env("LOG_LEVEL")
    )
    producer_name: str = Field(
        "default", validation_alias=_env("PRODUCER_NAME"), pattern=r"^[A-Za-z0-9_.-]+$"
    )
    shutdown_timeout: float = Field(10.0, validation_alias=_env("SHUTDOWN_TIMEOUT"), gt=0)
    visibility_timeout: int = Field(20, validation_alias=_env("CELERY_VISIBILITY_TIMEOUT"), ge=2)
    price_batch_size: int = Field(1000, validation_alias=_env("PRICE_BATCH_SIZE"), ge=1, le=5000)
    price_batch_ms: float = Field(0.0, validation_alias=_env("PRICE_BATCH_MS"), ge=0, le=10_000)
    price_buffer_size: int = Field(100_000, validation_alias=_env("PRICE_BUFFER_SIZE"), ge=1000)
    data_timeout: float = Field(120.0, validation_alias=_env("ALPACA_DATA_TIMEOUT"), ge=0)
    connection_limit_wait: float = Field(
        90.0, validation_alias=_env("ALPACA_CONNECTION_LIMIT_WAIT"), ge=0
    )
    record_file: Path | None = Field(None, validation_alias=_env("ALPACA_RECORD_FILE"))
    metrics_port: int | None = Field(None, validation_alias=_env("METRICS_PORT"), ge=0, le=65535)
    metrics_host: str = Field("127.0.0.1", validation_alias=_env("METRICS_HOST"))
    worker_metrics_port: int | None = Field(
        None, validation_alias=_env("WORKER_METRICS_PORT"), ge=0, le=65535
    )
    health_interval: float = Field(5.0, validation_alias=_env("HEALTH_INTERVAL"), gt=0)
    reconcile_interval: float = Field(60.0, validation_alias=_env("RECONCILE_INTERVAL"), gt=0)
    orders_stream_maxlen: int = Field(
        1_000_000, validation_alias=_env("ORDERS_STREAM_MAXLEN"), ge=1000
    )
    order_replica_wait_ms: int = Field(
        1000, validation_alias=_env("ORDER_REPLICA_WAIT_MS"), ge=0, le=60_000
    )
    order_dedupe_ttl: int = Field(7 * 86400, validation_alias=_env("ORDER_DEDUPE_TTL"), ge=60)
    order_retention: int = Field(7 * 86400, validation_alias=_env("ORDER_RETENTION"), ge=60)
    bar_history_days: float = Field(7, validation_alias=_env("BAR_HISTORY_DAYS"), gt=0, le=3650)
    bar_backfill_minutes: int = Field(
        60, validation_alias=_env("BAR_BACKFILL_MINUTES"), ge=0, le=100_000
    )
    # Tests only: the producer's market clock runs MARKET_CLOCK_SPEED times the wall clock from
    # MARKET_CLOCK_ORIGIN_NS, to agree with a simulator started with a compressed clock.
    market_clock_speed: float = Field(1.0, validation_alias=_env("MARKET_CLOCK_SPEED"), gt=0)
    market_clock_origin_ns: int | None = Field(
        None, validation_alias=_env("MARKET_CLOCK_ORIGIN_NS"), ge=0
    )
    # `alpaca-broker simulate`: the only API secret it accepts when --secret is not given
    # (an argument would show in `ps`).
    simulator_secret: SecretStr | None = Field(None, validation_alias=_env("SIMULATOR_SECRET"))

    @field_validator(
        "alpaca_symbols",
        "alpaca_data_channels",
        "alpaca_crypto_symbols",
        "alpaca_crypto_channels",
        "alpaca_option_symbols",
        "alpaca_option_channels",
        "alpaca_news_symbols",
        "redis_sentinels",
        mode="before",
    )
    @classmethod
    def _csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator(
        "alpaca_symbols", "alpaca_crypto_symbols", "alpaca_option_symbols", "alpaca_news_symbols"
    )
    @classmethod
    def _upper_symbols(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        symbols = tuple(s.upper() for s in value)
        if "*" in symbols and len(symbols) > 1:
            raise ValueError("'*' stands alone")
        return symbols

    @field_validator("redis_sentinels")
    @classmethod
    def _sentinel_addresses(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for address in value:
            parse_address(address)
        return value

    @field_validator(
        "redis_tls_ca_file",
        "redis_tls_cert_file",
        "redis_tls_key_file",
        "redis_sentinel_tls",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("redis_tls_ca_file", "redis_tls_cert_file", "redis_tls_key_file")
    @classmethod
    def _readable_file(cls, value: Path | None) -> Path | None:
        if value is not None and not (value.is_file() and os.access(value, os.R_OK)):
            raise ValueError(f"no readable file {str(value)!r}")
        return value

    @field_validator("redis_url", "celery_broker_url", "celery_prices_broker_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        value = _check_url(value, ("redis", "rediss", "unix"))
        # redis-py would let such a URL option override the verification (ssl_cert_reqs=none).
        options = parse_qs(urlsplit(value).query) if value else {}
        if tls := sorted(name for name in options if name.lower().startswith("ssl")):
            raise ValueError(f"TLS options go in REDIS_TLS_* (not {', '.join(tls)} in the URL)")
        return value

    @field_validator(
        "alpaca_data_stream_url",
        "alpaca_trading_stream_url",
        "alpaca_crypto_stream_url",
        "alpaca_option_stream_url",
        "alpaca_news_stream_url",
    )
    @classmethod
    def _ws_scheme(cls, value: str | None) -> str | None:
        return _check_url(value, ("ws", "wss"))

    @field_validator("alpaca_trading_api_url", "alpaca_data_api_url")
    @classmethod
    def _http_scheme(cls, value: str | None) -> str | None:
        return _check_url(value, ("http", "https"))

    # --- derived values ---
    @property
    def option_stream_url(self) -> str:
        """The option stream for ALPACA_OPTION_FEED, unless overridden."""
        default = f"{MARKET_DATA_STREAM}/v1beta1/{self.alpaca_option_feed}"
        return self.alpaca_option_stream_url or default

    @property
    def data_api_url(self) -> str:
        """The historical market data REST API base, unless overridden."""
        return self.alpaca_data_api_url or "https://data.alpaca.markets"

    def market_now_ns(self) -> int:
        """The market's clock: the wall clock unless the test-only MARKET_CLOCK_* say otherwise."""
        wall = time.time_ns()
        origin = self.market_clock_origin_ns
        if origin is None or self.market_clock_speed == 1.0:
            return wall
        return origin + int((wall - origin) * self.market_clock_speed)

    @property
    def sentinel_addresses(self) -> tuple[tuple[str, int], ...]:
        """``REDIS_SENTINELS`` as (host, port) pairs; empty when Sentinel is not used."""
        return tuple(parse_address(address) for address in self.redis_sentinels)

    @property
    def sentinel_tls(self) -> bool:
        """Whether the Sentinels are reached over TLS: ``REDIS_SENTINEL_TLS``, else whether
        ``REDIS_URL`` is ``rediss://``."""
        if self.redis_sentinel_tls is not None:
            return self.redis_sentinel_tls
        return urlsplit(self.redis_url).scheme == "rediss"

    @property
    def broker_url(self) -> str:
        """The Celery broker: ``CELERY_BROKER_URL``, else ``REDIS_URL``."""
        return self.celery_broker_url or self.redis_url

    @property
    def broker_is_output(self) -> bool:
        """Whether the Celery broker is the output Redis: no ``CELERY_BROKER_URL``, or one that
        names the same server and database as ``REDIS_URL`` (:func:`same_redis`: credentials
        and spelling aside). The one answer to that question: the broker through Sentinel
        (``redis_client.broker_options``), the order hand-off's replica wait and ``health``
        all ask it here."""
        broker = self.celery_broker_url
        return not broker or same_redis(broker, self.redis_url)

    @property
    def prices_broker_apart(self) -> bool:
        """Whether the ``prices`` queue has a broker of its own (``CELERY_PRICES_BROKER_URL``
        naming another server or database than the broker, docs/scaling.md): then only the
        producer and workers of ``-Q prices`` use it."""
        prices = self.celery_prices_broker_url
        return bool(prices) and not same_redis(str(prices), self.broker_url)

    @property
    def data_stream_url(self) -> str:
        """The market data WebSocket for the feed, unless overridden."""
        default = f"{BaseURL.MARKET_DATA_STREAM.value}/{FEED_PATHS[self.alpaca_feed]}"
        return self.alpaca_data_stream_url or default

    @property
    def trading_stream_url(self) -> str:
        """The paper or live trading stream, unless overridden."""
        default = BaseURL.TRADING_STREAM_PAPER if self.alpaca_paper else BaseURL.TRADING_STREAM_LIVE
        return self.alpaca_trading_stream_url or default.value

    @property
    def trading_api_url(self) -> str:
        """The paper or live REST API base (without ``/v2``), unless overridden."""
        default = BaseURL.TRADING_PAPER if self.alpaca_paper else BaseURL.TRADING_LIVE
        return self.alpaca_trading_api_url or default.value

    def credentials(self) -> tuple[str, str]:
        """The Alpaca key and secret; raises ConfigError naming the one that is missing or
        shorter than MIN_CREDENTIAL_CHARS (Alpaca's are 20 and 40 characters: a shorter one is
        a mistake, and too short to be redacted everywhere, alpaca_broker.redaction)."""
        found: list[str] = []
        for variable, alias, value in (
            ("ALPACA_API_KEY", "APCA_API_KEY_ID", self.alpaca_api_key),
            ("ALPACA_SECRET_KEY", "APCA_API_SECRET_KEY", self.alpaca_secret_key),
        ):
            text = value.get_secret_value() if value is not None else ""
            if not text:
                raise ConfigError(variable, f"is required (or {alias})")
            if len(text) < MIN_CREDENTIAL_CHARS:
                raise ConfigError(
                    variable,
                    f"is shorter than {MIN_CREDENTIAL_CHARS} characters: not an Alpaca key "
                    "(Alpaca's are 20 and 40 characters)",
                )
            found.append(text)
        return found[0], found[1]

    def secret_values(self) -> tuple[str, ...]:
        """Every secret string a log line must never show: the Alpaca key and secret, and each
        URL password as written (percent-encoded) and decoded. Any length: the log redactor
        decides how a short one is treated (alpaca_broker.redaction)."""
        secrets = (self.alpaca_api_key, self.alpaca_secret_key, self.redis_sentinel_password)
        values = [s.get_secret_value() for s in secrets if s]
        for url in (self.redis_url, self.celery_broker_url, self.celery_prices_broker_url):
            values += url_secrets(url) if url else []
        return tuple(dict.fromkeys(v for v in values if v))


def _first_error_line(exc: ValidationError) -> ConfigError:
    error = exc.errors()[0]
    loc = error.get("loc") or ("?",)
    variable = str(loc[0])
    reason = str(error.get("msg", "is invalid")).removeprefix("Value error, ")
    return ConfigError(variable, reason)


@cache
def load_settings() -> Settings:
    """Build the settings once per process; raises ConfigError naming the bad variable."""
    try:
        settings = Settings()
    except ValidationError as exc:
        raise _first_error_line(exc) from None
    check_together(settings)
    return settings


def check_together(settings: Settings) -> None:
    """Raise ConfigError for settings that are valid alone but not together."""
    if settings.redis_sentinels and not settings.redis_sentinel_master:
        raise ConfigError("REDIS_SENTINEL_MASTER", "is required when REDIS_SENTINELS is set")
    _check_tls_files(settings)


def _check_tls_files(settings: Settings) -> None:
    """Raise ConfigError unless the TLS files load as redis-py will load them: the CA file
    holds PEM certificates, the client certificate goes with its unencrypted key."""
    ca, cert = settings.redis_tls_ca_file, settings.redis_tls_cert_file
    key = settings.redis_tls_key_file
    if key and not cert:
        raise ConfigError("REDIS_TLS_KEY_FILE", "is the key of REDIS_TLS_CERT_FILE, which is unset")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca:
        try:
            context.load_verify_locations(cafile=str(ca))
        except (ssl.SSLError, ValueError) as exc:
            raise ConfigError("REDIS_TLS_CA_FILE", f"holds no PEM certificate: {exc}") from None
    if cert:
        try:  # an empty passphrase: an encrypted key fails here instead of prompting
            context.load_cert_chain(str(cert), str(key) if key else None, password=b"")
        except (ssl.SSLError, ValueError) as exc:
            raise ConfigError(
                "REDIS_TLS_CERT_FILE",
                "is not a PEM certificate with its unencrypted key (REDIS_TLS_KEY_FILE, or "
                f"in the same file): {exc}",
            ) from None


def exit_on_config_error(exc: ConfigError) -> NoReturn:
    """Print the one line that names the variable and stop with exit code 2."""
    print(f"alpaca-broker: configuration error: {exc}", file=sys.stderr, flush=True)
    raise SystemExit(exc.exit_code)
