"""The direct path, as the ceiling: the producer's own read loop and batching, but the
hand-off writes Redis itself (normalize + one Lua call per batch), no Celery in between.

``python -m benchmarks.direct`` runs it.
"""

from __future__ import annotations

from alpaca_broker.logs import setup_logging
from alpaca_broker.settings import load_settings
from producers.buffer import EventBuffer
from producers.handoff import BatchPolicy, Handoff
from producers.heartbeat import Heartbeat
from producers.main import run_until_signalled
from producers.prices import PriceItem, PriceStream, to_wire
from producers.status import StreamStatus
from producers.supervisor import Supervisor
from tasks.price_events import prepare_batch
from tasks.publisher import create_publisher


def main() -> int:
    """Run the price stream with a hand-off that publishes directly."""
    settings = load_settings()
    setup_logging("direct", level=settings.log_level)
    status = StreamStatus("prices")
    buffer: EventBuffer[PriceItem] = EventBuffer(status, maxlen=settings.price_buffer_size)
    publisher = create_publisher(settings)

    def send(batch: list[PriceItem]) -> None:
        publisher.publish_prices(prepare_batch([[ns, to_wire(m)] for ns, m in batch]).events)

    policy = BatchPolicy(settings.price_batch_size, settings.price_batch_ms / 1000)
    supervisor = Supervisor(
        {
            "prices": lambda: PriceStream(settings, status, buffer),
            "prices.handoff": lambda: Handoff("prices.handoff", buffer, status, send, policy),
        }
    )
    supervisor.add("heartbeat", lambda: Heartbeat(settings, supervisor.states, 1.0))
    return run_until_signalled(supervisor)


if __name__ == "__main__":
    raise SystemExit(main())
