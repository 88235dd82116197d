"""The one table of producer streams: name -> the units that make up that stream."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from celery_app.settings import Settings
from producers.supervisor import UnitFactory

StreamBuilder = Callable[[Settings], Mapping[str, UnitFactory]]

STREAMS: dict[str, StreamBuilder] = {}


def build_units(settings: Settings, streams: tuple[str, ...]) -> dict[str, UnitFactory]:
    """The supervised units of the chosen streams, in order."""
    units: dict[str, UnitFactory] = {}
    for name in streams:
        units.update(STREAMS[name](settings))
    return units
