"""The direct path, as the ceiling: the producer's own read loop and batching, but the
hand-off writes Redis itself (normalize + one Lua call per batch), no Celery in between.

``python -m benchmarks.direct`` runs it.
"""

from __future__ import annotations

import base64

from alpaca_broker.logs import setup_logging
from alpaca_broker.settings import load_settings
from producers.buffer import Message
from producers.frames import Frame
from producers.handoff import to_wire
from producers.health import Heartbeat, ProducerView
from producers.main import run_until_signalled
from producers.streams import STREAMS, build_stream
from producers.supervisor import Supervisor
from tasks.price_frames import prepare_batch
from tasks.publisher import create_publisher


def main() -> int:
    """Run the price stream with a hand-off that publishes directly."""
    settings = load_settings()
    setup_logging("direct", level=settings.log_level)
    publisher = create_publisher(settings)

    def send(batch: list[Message]) -> None:
        items = [
            [m.received_ns, base64.b64encode(m.payload.data).decode("ascii")]
            if type(m.payload) is Frame
            else [m.received_ns, to_wire(m.payload)]
            for m in batch
        ]
        publisher.publish_prices(prepare_batch(items).events)

    stream = build_stream(STREAMS["prices"], settings, send)
    supervisor = Supervisor(stream.units)
    view = ProducerView(settings.producer_name, {"prices": stream.status}, supervisor.states)
    supervisor.add("heartbeat", lambda: Heartbeat(settings, view))
    return run_until_signalled(supervisor)


if __name__ == "__main__":
    raise SystemExit(main())
