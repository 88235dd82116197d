"""The Celery app (``celery -A celery_app worker``), settings, Redis names and logging."""

from celery_app.app import create_app
from celery_app.errors import ConfigError
from celery_app.settings import exit_on_config_error

try:
    app = create_app()
except ConfigError as _exc:
    exit_on_config_error(_exc)

__all__ = ["app"]
