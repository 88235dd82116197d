"""The Sentinel part of ``alpaca-broker health``: the primary's address, its replicas' lag
and the Sentinels reached (only when ``REDIS_SENTINELS`` is set)."""

from __future__ import annotations

from typing import Any

import redis

from alpaca_broker.redis_client import sentinel_options
from alpaca_broker.settings import Settings


def replicas_from_info(info: dict[str, Any]) -> list[dict[str, Any]]:
    """Each replica of an ``INFO replication`` answer: address, state, lag (s, as Redis
    reports it) and bytes behind the primary's replication offset."""
    primary_offset = int(info.get("master_repl_offset", 0) or 0)
    found = []
    for name, value in sorted(info.items()):
        if not (name.startswith("slave") and name[5:].isdigit() and isinstance(value, dict)):
            continue
        found.append(
            {
                "address": f"{value.get('ip')}:{value.get('port')}",
                "state": value.get("state"),
                "lag_s": value.get("lag"),
                "behind_bytes": max(0, primary_offset - int(value.get("offset", 0) or 0)),
            }
        )
    return found


def collect_sentinel(settings: Settings, client: redis.Redis) -> dict[str, Any] | None:
    """Ask every Sentinel for the primary, and the primary (through ``client``) for its
    replicas; None without Sentinel."""
    if not settings.redis_sentinels:
        return None
    reached: list[str] = []
    unreached: list[str] = []
    primary: str | None = None
    for (host, port), text in zip(
        settings.sentinel_addresses, settings.redis_sentinels, strict=True
    ):
        sentinel = redis.Redis(
            host=host, port=port, decode_responses=True, **sentinel_options(settings)
        )
        try:
            address = sentinel.sentinel_get_master_addr_by_name(settings.redis_sentinel_master)
        except (redis.RedisError, OSError):
            unreached.append(text)
            continue
        finally:
            sentinel.close()
        reached.append(text)
        if address and primary is None:
            primary = f"{address[0]}:{address[1]}"
    report: dict[str, Any] = {
        "master_name": settings.redis_sentinel_master,
        "primary": primary,
        "sentinels_reached": reached,
        "sentinels_unreached": unreached,
        "replicas": [],
    }
    if primary is not None:
        try:
            report["replicas"] = replicas_from_info(client.info("replication"))
        except (redis.RedisError, OSError) as exc:
            report["replicas_error"] = str(exc)
    return report


def sentinel_problems(report: dict[str, Any] | None) -> list[str]:
    """Why the Sentinel setup is unhealthy: no Sentinel reached, or no primary named."""
    if report is None:
        return []
    if not report["sentinels_reached"]:
        return [f"no Sentinel reached: {', '.join(report['sentinels_unreached'])}"]
    if report["primary"] is None:
        return [f"the Sentinels name no primary for {report['master_name']}"]
    return []


def render_sentinel(report: dict[str, Any] | None) -> list[str]:
    """The report's lines about Sentinel."""
    if report is None:
        return []
    total = len(report["sentinels_reached"]) + len(report["sentinels_unreached"])
    replicas = ", ".join(
        f"{r['address']} {r['state']} lag {r['lag_s']}s ({r['behind_bytes']} bytes behind)"
        for r in report["replicas"]
    )
    return [
        f"sentinel {report['master_name']}: primary {report['primary']}; sentinels reached "
        f"{len(report['sentinels_reached'])} of {total} "
        f"({', '.join(report['sentinels_reached']) or 'none'}); replicas {replicas or 'none'}"
    ]
