"""The one table of producer streams: name -> the units that make up that stream."""

from __future__ import annotations

import atexit
from collections.abc import Callable, Mapping

from celery import Celery

from alpaca_broker.recording import RecordingWriter
from alpaca_broker.settings import Settings
from producers.orders import order_units
from producers.prices import price_units
from producers.supervisor import UnitFactory

StreamBuilder = Callable[[Settings, Celery, RecordingWriter | None], Mapping[str, UnitFactory]]

STREAMS: dict[str, StreamBuilder] = {
    "prices": price_units,
    "orders": order_units,
}


def build_units(settings: Settings, streams: tuple[str, ...]) -> dict[str, UnitFactory]:
    """The supervised units of the chosen streams, in order."""
    from celery_app import create_app

    app = create_app(settings)  # the producer's Celery client

    recorder = None
    if settings.record_file:
        meta = {"streams": list(streams), "feed": settings.alpaca_feed}
        recorder = RecordingWriter(settings.record_file, meta=meta, flush_every=100)
        atexit.register(recorder.close)  # flush the last frames when the process ends
    units: dict[str, UnitFactory] = {}
    for name in streams:
        units.update(STREAMS[name](settings, app, recorder))
    return units
