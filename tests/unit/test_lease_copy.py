"""Copying a single esm's checkpoints into leases: every checkpoint becomes a free lease at
that position, and a lease that exists already is never overwritten."""

from __future__ import annotations

import pytest

from esm.checkpoints.memory import MemoryCheckpointStore
from esm.leases.copy import copy_checkpoints
from esm.leases.model import SHARD_END, Lease
from esm.model import Checkpoint
from esm.testing.leases import FakeLeaseStore

pytestmark = pytest.mark.anyio


async def test_checkpoints_become_free_leases_and_existing_leases_are_kept() -> None:
    source = MemoryCheckpointStore()
    await source.save("m1", "shard-0", Checkpoint("42"))
    await source.save("m1", "shard-1", Checkpoint(None, finished=True))
    await source.save("m1", "shard-2", Checkpoint("7"))
    await source.save("other", "shard-0", Checkpoint("99"))
    tables = {"m1": FakeLeaseStore(), "m2": FakeLeaseStore()}
    tables["m1"].leases["shard-2"] = Lease("shard-2", counter=4, owner="w", checkpoint="8")

    report = await copy_checkpoints(
        source, {"m1": "orders", "m2": "clicks"}, lambda mapping_id: tables[mapping_id].table()
    )

    leases = tables["m1"].leases
    assert (leases["shard-0"].checkpoint, leases["shard-0"].owner, leases["shard-0"].counter) == (
        "42",
        None,
        0,
    )
    assert leases["shard-1"].checkpoint == SHARD_END
    assert (leases["shard-2"].checkpoint, leases["shard-2"].owner) == ("8", "w")
    assert tables["m2"].leases == {}
    assert report.copied == ["orders/shard-0 at 42", f"orders/shard-1 at {SHARD_END}"]
    assert report.kept == ["orders/shard-2 at 7"]
    assert report.lines()[0] == "copied 2 checkpoint(s) into leases"
