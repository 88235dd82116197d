"""The one table of producer streams: name -> the units that make up that stream."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from celery import Celery

from celery_app.settings import Settings
from producers.orders import order_units
from producers.prices import price_units
from producers.supervisor import UnitFactory

StreamBuilder = Callable[[Settings, Celery], Mapping[str, UnitFactory]]

STREAMS: dict[str, StreamBuilder] = {
    "prices": price_units,
    "orders": order_units,
}


def build_units(settings: Settings, streams: tuple[str, ...]) -> dict[str, UnitFactory]:
    """The supervised units of the chosen streams, in order."""
    from celery_app import app  # the producer's Celery client, configured from settings

    units: dict[str, UnitFactory] = {}
    for name in streams:
        units.update(STREAMS[name](settings, app))
    return units
