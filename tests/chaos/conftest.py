"""Options of the chaos suite (``make chaos`` passes them) and the parametrisation they pick.

* no option: the CI seeds and the pinned regression seeds (``test_chaos.py``);
* ``--chaos-seed N`` (repeatable): replay those seeds only;
* ``--chaos-seeds N``: a soak of N random seeds, each printed before it runs;
* ``--chaos-length S``: seconds of faults and orders per seed for a replay or a soak;
* ``--chaos-redis FLAVOR``: the server flavour of a replay or a soak (valkey, redis6, redis7);
* ``--chaos-mix basic|all``: the fault kinds drawn (basic: worker and producer kills and
  freezes, Redis restarts; all: every kind);
* ``--chaos-cut S``: run only the schedule's first S seconds (a long seed's failing part).
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass

import pytest

from alpaca_broker.redis_server import FLAVORS, Flavor
from tests.harness import redis_flavors

DEFAULT_LENGTH = 40.0  # seconds: a CI seed's schedule
SOAK_LENGTH = 120.0  # seconds: a soak seed's schedule, by default


@dataclass(frozen=True)
class ChaosCase:
    """One seed to run: its schedule's length, the server flavour, the mix of faults."""

    seed: int
    flavor: Flavor
    length: float = DEFAULT_LENGTH
    mix: str = "all"
    why: str = ""
    cut: float | None = None  # run only the first seconds of the schedule

    @property
    def id(self) -> str:
        cut = f"-cut{self.cut:g}s" if self.cut is not None else ""
        return f"seed{self.seed}-{self.flavor}-{self.length:g}s{cut}-{self.mix}"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("chaos", "the chaos suite (tests/chaos)")
    group.addoption("--chaos-seed", type=int, action="append", default=[], help="replay a seed")
    group.addoption("--chaos-seeds", type=int, default=0, help="soak: run N random seeds")
    group.addoption("--chaos-length", type=float, default=None, help="seconds per schedule")
    group.addoption("--chaos-redis", choices=FLAVORS, default=None, help="server flavour")
    group.addoption("--chaos-mix", choices=("basic", "all"), default="all", help="fault kinds")
    group.addoption("--chaos-cut", type=float, default=None, help="run only its first seconds")


def requested_cases(config: pytest.Config, defaults: list[ChaosCase]) -> list[ChaosCase]:
    """The cases the options ask for, else ``defaults``."""
    # Registered only when pytest starts from tests/chaos (``make chaos``): defaults else.
    seeds: list[int] = list(config.getoption("--chaos-seed", []))
    soak: int = config.getoption("--chaos-seeds", 0)
    length: float | None = config.getoption("--chaos-length", None)
    flavor: Flavor = config.getoption("--chaos-redis", None) or redis_flavors.run_flavor()
    mix: str = config.getoption("--chaos-mix", "all")
    cut: float | None = config.getoption("--chaos-cut", None)
    if soak:
        draw = random.SystemRandom()
        seeds += [draw.randrange(1, 10**9) for _ in range(soak)]
        length = length or SOAK_LENGTH
    if not seeds:
        only = redis_flavors.requested()  # ALPACA_TEST_REDIS naming one flavour: all on it
        if only in FLAVORS:
            return [dataclasses.replace(case, flavor=only) for case in defaults]
        return defaults
    return [ChaosCase(seed, flavor, length or DEFAULT_LENGTH, mix, cut=cut) for seed in seeds]
