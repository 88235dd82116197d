"""The generator: a seed names one schedule, faults stay in their lanes and in the run."""

from __future__ import annotations

import itertools

import pytest

from tests.chaos.schedule import ALL_KINDS, BASIC_KINDS, KINDS, ONLY_ON, generate


def test_the_same_seed_gives_the_same_schedule_and_another_seed_another() -> None:
    assert generate(7, 60) == generate(7, 60)
    assert generate(7, 60).describe() == generate(7, 60).describe()
    assert generate(7, 60) != generate(8, 60)


@pytest.mark.parametrize("seed", range(30))
def test_faults_of_one_lane_never_overlap_and_all_end_within_the_run(seed: int) -> None:
    schedule = generate(seed, 90)
    assert schedule.faults
    assert schedule.orders
    for lane in {f.lane for f in schedule.faults}:
        faults = [f for f in schedule.faults if f.lane == lane]
        for earlier, later in itertools.pairwise(faults):
            assert earlier.end <= later.at
    assert all(f.at > 0 and f.end <= schedule.length for f in schedule.faults)
    assert all(KINDS[f.kind][1][0] <= f.duration <= KINDS[f.kind][1][1] for f in schedule.faults)
    assert all(ONLY_ON.get(f.kind, schedule.topology) == schedule.topology for f in schedule.faults)
    assert all(0 < o.at < schedule.length for o in schedule.orders)


def test_a_mix_draws_only_its_kinds_and_picks_the_topology_they_need() -> None:
    basic = [generate(seed, 120, BASIC_KINDS) for seed in range(10)]
    assert all(s.topology == "single" for s in basic)
    assert {f.kind for s in basic for f in s.faults} == BASIC_KINDS
    failovers = generate(1, 60, {"failover", "worker-sigkill"})
    assert failovers.topology == "sentinel"
    assert {s.topology for s in (generate(seed, 30, ALL_KINDS) for seed in range(20))} == {
        "single",
        "sentinel",
    }
    quiet = generate(1, 30, (), topology="single")
    assert quiet.faults == ()
    assert quiet.orders
    with pytest.raises(ValueError, match="unknown fault kinds"):
        generate(1, 30, {"meteor"})


def test_a_cut_schedule_keeps_the_faults_over_by_then_and_the_orders_started_before() -> None:
    whole = generate(849313358, 120)
    cut = whole.until(40)
    assert cut.cut == 40
    assert cut.faults == tuple(f for f in whole.faults if f.end <= 40)
    assert cut.faults
    assert all(o.at < 38 for o in cut.orders)
    assert cut.orders == whole.orders[: len(cut.orders)]
    assert "its first 40 s" in cut.describe()
