"""The checker: a pure function from a run's :class:`History` to its violations.

Rules (docs/reliability.md, "Chaos suite", says the same for operators):

1. **Exactly once.** No event identity appears twice in ``P:orders:events``, nor twice on
   ``P:orders`` as the monitor saw it, ever.
2. **Nothing delivered is lost.** An event the trading stream *delivered* (a producer run
   read it off its socket: that run's own recording) is *required* in ``P:orders:events``
   when it reached the ``orders`` queue (the broker tap saw a task carry it) or when any run
   that read it was never SIGKILLed (that run had to hand it off, whatever else happened:
   a freeze, a lost lease, Redis refusing writes). An event read only by runs that were
   SIGKILLed, and never seen in the queue, is *exempt*: it died in that process's memory
   before it reached Redis, the one loss the design allows. Exempt events, and events the
   simulator emitted while no socket was open, are covered by rule 3 alone.
3. **Convergence.** Every order's ``P:order:{ID}`` equals REST's ``status`` and
   ``filled_qty``, within 3 minutes of the last change (the last fault over, the last order
   moved), and ``P:orders:events`` holds an event of that order with that status.
4. **No regression.** No order hash, as the monitor saw it change, went back in event time,
   lowered its ``filled_qty``, left a final status, or vanished once it existed.
5. **No dead letters.** Every fault of a schedule heals, so ``P:orders:dead`` stays empty.
6. **No phantoms.** A published ``stream`` event is one the simulator emitted; a
   ``reconciliation`` event names an order the simulator has.
7. **Not vacuous.** The run delivered events and published some: a run that tested nothing
   fails.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from tests.chaos.model import EventKey, History, Observation, key_of_published

#: The contract's final statuses (every other status is open).
FINAL_STATUSES = frozenset({"filled", "canceled", "expired", "rejected", "replaced"})
CONVERGE_WITHIN = 180.0  # seconds after the last change
EXAMPLES = 5


@dataclass
class Verdict:
    """The violations found (empty: the run is clean) and what was counted."""

    violations: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations

    def summary(self) -> str:
        return ", ".join(f"{name} {value}" for name, value in self.counts.items())


def check(history: History) -> Verdict:
    """Every rule over ``history``."""
    verdict = Verdict()
    verdict.violations += exactly_once(history)
    verdict.violations += presence(history, verdict.counts)
    verdict.violations += convergence(history)
    verdict.violations += no_regression(history.observations)
    verdict.violations += no_dead_letters(history)
    verdict.violations += no_phantoms(history)
    verdict.violations += not_vacuous(history)
    verdict.counts["orders"] = len(history.rest)
    verdict.counts["published"] = len(history.published)
    return verdict


def _examples(items: Iterable[object]) -> str:
    listed = sorted(items, key=str)
    more = f" (+{len(listed) - EXAMPLES} more)" if len(listed) > EXAMPLES else ""
    return "; ".join(str(item) for item in listed[:EXAMPLES]) + more


def exactly_once(history: History) -> list[str]:
    """Rule 1."""
    found = []
    for where, keys in (
        ("P:orders:events", [key_of_published(e) for e in history.published]),
        ("P:orders", history.channel),
    ):
        doubled = {key: n for key, n in Counter(keys).items() if n > 1}
        if doubled:
            found.append(
                f"exactly once: {len(doubled)} events twice in {where}: "
                f"{_examples(f'{k} x{n}' for k, n in doubled.items())}"
            )
    return found


def required_events(history: History) -> tuple[set[EventKey], set[EventKey]]:
    """(required, exempt) of rule 2."""
    readers: dict[EventKey, set[str]] = defaultdict(set)
    for run, keys in history.received.items():
        for key in keys:
            readers[key].add(run)
    required = set(history.queued)
    exempt = set()
    for key, runs in readers.items():
        if key in history.queued or runs - history.killed:
            required.add(key)
        else:
            exempt.add(key)
    return required, exempt


def presence(history: History, counts: dict[str, int]) -> list[str]:
    """Rule 2; counts delivered, required and exempt events in ``counts``."""
    required, exempt = required_events(history)
    published = {key_of_published(e) for e in history.published}
    delivered = set().union(*history.received.values()) if history.received else set()
    counts["emitted"] = len(history.emitted)
    counts["delivered"] = len(delivered)
    counts["required"] = len(required)
    counts["exempt"] = len(exempt)
    counts["exempt_published"] = len(exempt & published)
    missing = required - published
    if not missing:
        return []
    queued = missing & set(history.queued)
    lived = missing - queued
    found = []
    if queued:
        found.append(
            f"lost: {len(queued)} events reached the orders queue and are not in "
            f"P:orders:events: {_examples(f'{k} task {history.queued[k]}' for k in queued)}"
        )
    if lived:
        runs = {k: sorted(r for r, keys in history.received.items() if k in keys) for k in lived}
        found.append(
            f"lost: {len(lived)} events read by a producer run that was never "
            f"SIGKILLed are not in P:orders:events: "
            f"{_examples(f'{k} read by {runs[k]}' for k in lived)}"
        )
    return found


def convergence(history: History) -> list[str]:
    """Rule 3."""
    found = []
    differ = {
        order_id: (history.hashes.get(order_id, (None, None)), state)
        for order_id, state in history.rest.items()
        if history.hashes.get(order_id, (None, None)) != state
    }
    if differ:
        found.append(
            f"convergence: {len(differ)} order hashes differ from REST at the end "
            f"(Redis, REST): {_examples(f'{o} {h} != {r}' for o, (h, r) in differ.items())}"
        )
    statuses: dict[str, set[str]] = defaultdict(set)
    for event in history.published:
        statuses[str(event["order_id"])].add(str(event.get("status")))
    unled = [o for o, (status, _) in history.rest.items() if status not in statuses[o]]
    if unled:
        found.append(
            f"convergence: {len(unled)} orders have no event leading to their REST "
            f"status in P:orders:events: "
            f"{_examples(f'{o} {history.rest[o][0]}' for o in unled)}"
        )
    if history.converged_at is None:
        found.append(
            f"convergence: the order hashes never all equalled REST within "
            f"{CONVERGE_WITHIN:.0f} s of the last change"
        )
    elif history.converged_at - history.last_change > CONVERGE_WITHIN:
        took = history.converged_at - history.last_change
        found.append(
            f"convergence: took {took:.1f} s after the last change (bound {CONVERGE_WITHIN:.0f} s)"
        )
    return found


def _decimal(text: str | None) -> Decimal:
    try:
        return Decimal(text or "0")
    except InvalidOperation:
        return Decimal(0)


def no_regression(observations: list[Observation]) -> list[str]:
    """Rule 4."""
    by_order: dict[str, list[Observation]] = defaultdict(list)
    for observed in sorted(observations, key=lambda o: o.at):
        by_order[observed.order_id].append(observed)
    problems = []
    for order_id, seen in by_order.items():
        held: Observation | None = None
        for now in seen:
            if held is not None:
                why = _regressed(held, now)
                if why:
                    problems.append(f"{order_id} at {now.at:.2f}s: {why}")
            held = now  # after a vanished hash, the next state is compared with nothing
    if not problems:
        return []
    return [f"regression: {len(problems)} order hash changes went backwards: {_examples(problems)}"]


def _regressed(held: Observation, now: Observation) -> str | None:
    if held.ts_ns is None:
        return None
    if now.ts_ns is None:
        return f"the hash vanished (held {held.status} at ts {held.ts_ns})"
    if now.ts_ns < held.ts_ns:
        return f"ts {held.ts_ns} -> {now.ts_ns} ({held.status} -> {now.status})"
    if _decimal(now.filled_qty) < _decimal(held.filled_qty):
        return f"filled_qty {held.filled_qty} -> {now.filled_qty}"
    if held.status in FINAL_STATUSES and now.status != held.status:
        return f"final {held.status} -> {now.status}"
    return None


def no_dead_letters(history: History) -> list[str]:
    """Rule 5."""
    if not history.dead_letters:
        return []
    reasons = Counter(str(entry.get("reason")) for entry in history.dead_letters)
    return [
        f"dead letters: {len(history.dead_letters)} entries in P:orders:dead for faults "
        f"that heal: {_examples(f'{r} x{n}' for r, n in reasons.items())}"
    ]


def no_phantoms(history: History) -> list[str]:
    """Rule 6."""
    emitted = set(history.emitted)
    phantoms = [
        key_of_published(e)
        for e in history.published
        if (e.get("source") == "stream" and key_of_published(e) not in emitted)
        or (e.get("source") != "stream" and str(e["order_id"]) not in history.rest)
    ]
    if not phantoms:
        return []
    return [
        f"phantoms: {len(phantoms)} published events the simulator never emitted: "
        f"{_examples(phantoms)}"
    ]


def not_vacuous(history: History) -> list[str]:
    """Rule 7."""
    if not any(history.received.values()) or not history.published or not history.rest:
        return ["vacuous: the run delivered or published no order event: it tested nothing"]
    return []
