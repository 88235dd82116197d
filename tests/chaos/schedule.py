"""The generator: a seed becomes a schedule, a plain list of faults and order starts.

Everything random in a chaos run comes from one ``random.Random(seed)`` here (the simulator's
own draws, an order's symbol, side and pauses, take a seed drawn from it too), so a seed names
its schedule: ``make chaos SEED=...`` replays it. The schedule is data, printed whole when a
run fails; the nemesis (``tests/chaos/nemesis.py``) applies it to the running stack.

Faults come in lanes, one per kind of target, as Jepsen composes nemeses: within a lane faults
follow each other (a worker is not killed while it is frozen), across lanes they overlap freely
(a Redis restart during a producer takeover during a REST outage). Every fault ends, and its
target is whole again, by ``length`` seconds: what follows is the healing the checker judges.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterable
from dataclasses import dataclass

WORKERS = ("worker-0", "worker-1")
#: Producer targets are roles, resolved when the fault starts (the lease holder then).
PRODUCERS = ("holder", "standby")
TOPOLOGIES = ("single", "sentinel")

#: Every fault kind: the lane it runs in, and (min, max) seconds it lasts (0: instant).
KINDS: dict[str, tuple[str, tuple[float, float]]] = {
    "worker-sigkill": ("workers", (0.5, 8.0)),  # main and pool SIGKILLed, restarted after
    "worker-child-sigkill": ("workers", (0.0, 0.0)),  # one pool child; the main replaces it
    "worker-sigstop": ("workers", (1.0, 10.0)),  # the whole worker frozen, then SIGCONT
    "producer-sigkill": ("producers", (0.5, 8.0)),  # restarted (same name) after
    "producer-sigstop": ("producers", (1.0, 8.0)),  # past LEASE_TTL the standby takes over
    "redis-restart": ("redis", (1.0, 8.0)),  # SIGKILL, back with its AOF after
    "failover": ("redis", (2.0, 10.0)),  # primary SIGKILLed, promotion, old one back after
    "oom": ("redis", (1.0, 6.0)),  # maxmemory below use, noeviction
    "noreplicas": ("redis", (1.0, 6.0)),  # min-replicas-to-write above the replicas there
    "readonly": ("redis", (1.0, 6.0)),  # REPLICAOF a silent port, then REPLICAOF NO ONE
    "socket-drop": ("trading", (0.0, 0.0)),  # the trading socket cut without a close frame
    "trading-outage": ("trading", (1.0, 8.0)),  # cut, and reconnects refused (503) meanwhile
    "rest-errors": ("rest", (2.0, 10.0)),  # every REST request answered 500
    "rest-slow": ("rest", (2.0, 10.0)),  # every REST answer held back ``param`` seconds
}
ALL_KINDS = frozenset(KINDS)
#: The kinds only one topology has: a Sentinel failover needs Sentinels; READONLY by
#: REPLICAOF would make Sentinels reconfigure, and a restart of one node is a failover there.
ONLY_ON = {"failover": "sentinel", "redis-restart": "single", "readonly": "single"}
#: The mix the suite started from (worker and producer kills and freezes, Redis restarts).
BASIC_KINDS = frozenset({"worker-sigkill", "producer-sigkill", "producer-sigstop", "redis-restart"})

#: Order lifecycles (simulator/orderflow.py) and their weights.
SCENARIOS = (
    ("fill", 30),
    ("partial_fill", 25),
    ("cancel", 15),
    ("replace", 10),
    ("reject", 5),
    ("expire", 5),
    ("done_for_day", 10),
)
ORDER_RATE = 2.5  # orders started per second
#: Seconds the last orders have to run their lifecycles before the schedule's end.
ORDERS_END_BEFORE = 2.0
LANE_GAP = (1.0, 8.0)  # seconds between two faults of one lane
SLOW_REST = (1.0, 5.0)  # seconds a slow REST answer is held back


@dataclass(frozen=True)
class Fault:
    """One fault: at ``at`` seconds into the run, ``kind`` hits ``target`` for ``duration``
    seconds (``param``: the kind's extra figure, the delay of a slow REST answer)."""

    at: float
    kind: str
    target: str
    duration: float
    param: float = 0.0

    @property
    def lane(self) -> str:
        return KINDS[self.kind][0]

    @property
    def end(self) -> float:
        return self.at + self.duration

    def __str__(self) -> str:
        extra = f" ({self.param:.1f}s each)" if self.param else ""
        return f"{self.at:7.2f}s  {self.kind:<21}{self.target:<9} for {self.duration:5.2f}s{extra}"


@dataclass(frozen=True)
class OrderStart:
    """At ``at`` seconds into the run, the simulator starts one ``scenario`` lifecycle."""

    at: float
    scenario: str


@dataclass(frozen=True)
class Schedule:
    """What one seed runs: the Redis topology, the faults and the order flow."""

    seed: int
    topology: str
    length: float
    faults: tuple[Fault, ...]
    orders: tuple[OrderStart, ...]
    sim_seed: int
    kinds: frozenset[str] = ALL_KINDS
    cut: float | None = None  # run only this many seconds of it (:meth:`until`)

    @property
    def mix(self) -> str:
        """``basic`` or ``all`` (``make chaos MIX=...``), else the kinds drawn from."""
        named = {BASIC_KINDS: "basic", ALL_KINDS: "all"}
        return named.get(self.kinds) or ",".join(sorted(self.kinds)) or "none"

    @property
    def last_fault_end(self) -> float:
        return max((f.end for f in self.faults), default=0.0)

    def until(self, seconds: float) -> Schedule:
        """The first ``seconds`` of this schedule: the faults over by then and the orders
        started before, the rest as drawn (a long soak's failing part, pinned for CI)."""
        return dataclasses.replace(
            self,
            faults=tuple(f for f in self.faults if f.end <= seconds),
            orders=tuple(o for o in self.orders if o.at < seconds - ORDERS_END_BEFORE),
            cut=seconds,
        )

    def describe(self) -> str:
        """The whole schedule, as printed when a run fails."""
        kinds = sorted({f.kind for f in self.faults})
        cut = f" (its first {self.cut:g} s)" if self.cut is not None else ""
        lines = [
            f"seed {self.seed}: {self.topology} Redis, {self.length:.0f} s{cut}, "
            f"{len(self.orders)} orders, {len(self.faults)} faults ({', '.join(kinds)})",
            *(f"  {fault}" for fault in self.faults),
        ]
        return "\n".join(lines)


def generate(
    seed: int,
    length: float,
    kinds: Iterable[str] = ALL_KINDS,
    topology: str | None = None,
) -> Schedule:
    """The schedule of ``seed``: ``length`` seconds of faults of ``kinds`` and of orders.

    The topology is drawn (a third of the seeds run behind Sentinel) unless given or unless
    ``kinds`` leave only one possible.
    """
    allowed = frozenset(kinds)
    unknown = allowed - ALL_KINDS
    if unknown:
        raise ValueError(f"unknown fault kinds: {sorted(unknown)}")
    rng = random.Random(seed)
    drawn = "sentinel" if rng.random() < 1 / 3 else "single"
    topology = topology or _topology(allowed, drawn)
    if topology not in TOPOLOGIES:
        raise ValueError(f"topology must be one of {TOPOLOGIES}")
    usable = sorted(k for k in allowed if ONLY_ON.get(k, topology) == topology)
    faults: list[Fault] = []
    for lane in sorted({KINDS[k][0] for k in usable}):
        faults += _lane(rng, [k for k in usable if KINDS[k][0] == lane], length)
    faults.sort(key=lambda f: (f.at, f.kind))
    return Schedule(
        seed=seed,
        topology=topology,
        length=length,
        faults=tuple(faults),
        orders=_orders(rng, length),
        sim_seed=rng.randrange(2**31),
        kinds=allowed,
    )


def _topology(allowed: frozenset[str], drawn: str) -> str:
    """``drawn``, unless the kinds name topology-specific faults of one topology only."""
    needs = {ONLY_ON[k] for k in allowed if k in ONLY_ON}
    return needs.pop() if len(needs) == 1 else drawn


def _lane(rng: random.Random, kinds: list[str], length: float) -> list[Fault]:
    """Faults of one lane, one after the other, each over by ``length``."""
    faults: list[Fault] = []
    at = rng.uniform(1.0, 5.0)
    while True:
        kind = rng.choice(kinds)
        low, high = KINDS[kind][1]
        duration = round(rng.uniform(low, high), 2)
        target = _target(rng, kind)
        param = round(rng.uniform(*SLOW_REST), 2) if kind == "rest-slow" else 0.0
        if at + duration > length:
            return faults
        faults.append(Fault(round(at, 2), kind, target, duration, param))
        at += duration + rng.uniform(*LANE_GAP)


def _target(rng: random.Random, kind: str) -> str:
    lane = KINDS[kind][0]
    if lane == "workers":
        return rng.choice(WORKERS)
    if lane == "producers":
        return rng.choice(PRODUCERS)
    return lane


def _orders(rng: random.Random, length: float) -> tuple[OrderStart, ...]:
    names = [name for name, _ in SCENARIOS]
    weights = [weight for _, weight in SCENARIOS]
    starts: list[OrderStart] = []
    at = rng.expovariate(ORDER_RATE)
    while at < length - ORDERS_END_BEFORE:
        starts.append(OrderStart(round(at, 2), rng.choices(names, weights)[0]))
        at += rng.expovariate(ORDER_RATE)
    return tuple(starts)
