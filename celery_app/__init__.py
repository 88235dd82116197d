"""The Celery app (``celery -A celery_app worker``) and nothing else.

Importing this package builds nothing and reads no file: ``app`` is created on first access
(Celery's ``-A celery_app`` asks for it), from the environment and ``.env``, and Flower is
locked then (:mod:`celery_app.flower`). A process that has its own settings (the producer)
calls :func:`create_app` instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from celery_app.config import create_app

if TYPE_CHECKING:
    from celery import Celery

    app: Celery

__all__ = ["app", "create_app"]


def __getattr__(name: str) -> Any:
    if name != "app":
        raise AttributeError(f"module 'celery_app' has no attribute {name!r}")
    from alpaca_broker.errors import ConfigError
    from alpaca_broker.settings import exit_on_config_error

    try:
        built = create_app()
    except ConfigError as exc:
        exit_on_config_error(exc)
    # Celery's command line loads this app before it runs `flower`: Flower is locked
    # (login required, loopback, read-only) whatever directory it starts in.
    from celery_app.flower import lock_flower

    lock_flower()
    globals()["app"] = built  # later lookups find it without this hook
    return built
