"""A producer process made of test units: `python -m tests.harness.supervised OUT_DIR`.

It runs the shipped supervisor and signal handling (`producers.main.run_until_signalled`)
around units that hold data until flushed, so a test can signal it like a real producer.
"""

from __future__ import annotations

import sys
from pathlib import Path

from celery_app.logs import setup_logging
from producers.main import run_until_signalled
from producers.supervisor import Supervisor
from tests.harness.units import HoldingUnit


def main(out_dir: Path) -> int:
    setup_logging("producer")
    supervisor = Supervisor(
        {
            "alpha": lambda: HoldingUnit("alpha", out_dir / "alpha.flushed"),
            "beta": lambda: HoldingUnit("beta", out_dir / "beta.flushed"),
        },
        shutdown_timeout=5.0,
    )
    (out_dir / "started").write_text("yes")
    return run_until_signalled(supervisor)


if __name__ == "__main__":
    raise SystemExit(main(Path(sys.argv[1])))
