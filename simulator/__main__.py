"""``python -m simulator``: the same as ``alpaca-broker simulate``."""

from simulator.cli import main

raise SystemExit(main())
