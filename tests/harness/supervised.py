"""A producer process made of test units: `python -m tests.harness.supervised OUT_DIR`.

It runs the shipped supervisor and signal handling (`producers.main.run_until_signalled`)
around units that hold data until flushed, so a test can signal it like a real producer.
"""

from __future__ import annotations

import sys
from pathlib import Path

from alpaca_broker.logs import setup_logging
from producers.main import run_until_signalled
from producers.supervisor import Supervisor
from tests.harness.units import HoldingUnit


def main(out_dir: Path) -> int:
    setup_logging("producer")

    def last_unit() -> HoldingUnit:
        # Factories run inside supervisor.run(), after the signal handlers are installed:
        # a test that signals once it sees this file cannot hit the default handler.
        (out_dir / "started").write_text("yes")
        return HoldingUnit("beta", out_dir / "beta.flushed")

    supervisor = Supervisor(
        {"alpha": lambda: HoldingUnit("alpha", out_dir / "alpha.flushed"), "beta": last_unit},
        shutdown_timeout=5.0,
    )
    return run_until_signalled(supervisor)


if __name__ == "__main__":
    raise SystemExit(main(Path(sys.argv[1])))
