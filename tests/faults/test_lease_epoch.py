"""The lease epoch across a Sentinel failover: the primary dies with writes its replica never
received, Sentinel promotes the replica, and no epoch a holder stepped up with (or that
``P:lease`` showed) is handed out again (producers/lease.py, "The epoch never repeats").

The replica replicates through a :class:`~tests.harness.proxy.TcpProxy`, so a test can stop
the primary's writes from reaching it while both still count it as connected (a lagging
replica: ``WAIT`` gets no acknowledgement), as when a primary dies a moment after a write.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from alpaca_broker.keys import Keys
from alpaca_broker.settings import Settings
from producers.lease import UNCONFIRMED_STEP_UP_S, Lease
from tests.harness.proxy import TcpProxy
from tests.harness.sentinel import SentinelCluster
from tests.harness.wait import wait_until

pytestmark = pytest.mark.faults

KEYS = Keys()
LEASE = "feed"


@pytest.fixture
def relayed(tmp_path: Path) -> Iterator[tuple[SentinelCluster, TcpProxy]]:
    """A Sentinel cluster whose replica replicates through a :class:`TcpProxy`."""
    cluster = SentinelCluster(tmp_path / "sentinel")
    relay = TcpProxy(("127.0.0.1", cluster.primary_port))
    argv = cluster.replica.argv
    argv[argv.index("--replicaof") + 2] = str(relay.port)
    try:
        cluster.start()
        yield cluster, relay
    finally:
        cluster.stop()
        relay.close()


def _lease(cluster: SentinelCluster, name: str) -> Lease:
    values: dict[str, Any] = {
        "_env_file": None,
        **cluster.env,
        "PRODUCER_LEASE": LEASE,
        "PRODUCER_NAME": name,
    }
    return Lease(Settings(**values), lambda active: None)


def _shown_on(cluster: SentinelCluster) -> int:
    """The epoch ``P:lease`` shows on the primary now (0 when free)."""
    raw = cluster.primary.client(decode_responses=True).get(KEYS.lease(LEASE))
    return int(json.loads(raw)["epoch"]) if raw else 0


def test_an_epoch_no_replica_confirmed_is_not_taken_and_the_promoted_replica_grows_past_all(
    relayed: tuple[SentinelCluster, TcpProxy],
) -> None:
    cluster, relay = relayed
    handed_out: list[int] = []
    for name in ("a", "b"):  # two changes of holder, replicated as usual
        holder = _lease(cluster, name)
        wait_until(holder.try_take, 10, message=f"{name} takes the lease")
        handed_out.append(holder.epoch)
        holder.flush(1)
    replica = cluster.replica.client(decode_responses=True)
    wait_until(
        lambda: replica.get(KEYS.lease_epoch(LEASE)) == str(handed_out[-1]),
        10,
        message="the replica has the epoch counter",
    )

    relay.stall()  # the primary's next writes never reach the replica
    late = _lease(cluster, "c")
    took = late.try_take()
    if took:
        handed_out.append(late.epoch)
    handed_out.append(_shown_on(cluster))
    cluster.kill_primary()

    after = _lease(cluster, "d")  # a producer that saw nothing of the above
    wait_until(after.try_take, 20, message="a holder on the promoted replica")
    assert after.epoch > max(handed_out), (after.epoch, handed_out)
    assert not took  # an epoch only the primary had was never acted on


def test_a_holder_that_stepped_up_unconfirmed_is_outgrown_by_a_standby_that_saw_it(
    relayed: tuple[SentinelCluster, TcpProxy], caplog: pytest.LogCaptureFixture
) -> None:
    cluster, relay = relayed
    caplog.set_level(logging.INFO, logger="producers.lease")
    relay.stall()  # a replica connected but stuck: nothing the primary writes reaches it
    holder = _lease(cluster, "a")
    started = time.monotonic()
    # The lease is not left vacant for a stuck replica: the holder steps up anyway.
    wait_until(holder.try_take, 10, interval=0.2, message="the holder steps up anyway")
    assert time.monotonic() - started >= UNCONFIRMED_STEP_UP_S
    assert any("on the primary alone" in r.getMessage() for r in caplog.records)
    standby = _lease(cluster, "b")
    assert not standby.try_take()  # held: the standby sees the holder's epoch
    cluster.kill_primary()  # the holder's epoch is lost with the primary

    wait_until(standby.try_take, 20, message="the standby takes over on the promoted replica")
    assert standby.epoch > holder.epoch, (standby.epoch, holder.epoch)
