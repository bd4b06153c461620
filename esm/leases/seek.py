"""A seek of a leased mapping (`esm seek` with `state.backend: dynamodb`): each shard's lease
written at the new position and set free.

Freeing is what makes it safe while replicas run: the lease's owner sees on its next pass
that the lease is no longer its own and stops the reader, and any checkpoint that reader
still tries is refused by the counter, so nothing is checkpointed over the seek. The next
taker, on whichever replica, starts at the position.
"""

from __future__ import annotations

from collections.abc import Mapping

from esm.errors import CheckpointError
from esm.leases.model import Lease
from esm.leases.table import LeaseConflict, LeaseTable
from esm.model import Checkpoint

__all__ = ["seek_leases"]

# A lease being written by its owner at the same moment is read again this many times.
_ATTEMPTS = 5


async def seek_leases(table: LeaseTable, checkpoints: Mapping[str, Checkpoint]) -> None:
    """Write each shard's seek `checkpoint` (as `esm.engine.seek` makes them) into its lease,
    creating the leases that do not exist yet.

    :raises CheckpointError: the table did not answer, or a lease kept changing.
    """
    for shard_id, checkpoint in sorted(checkpoints.items()):
        for _ in range(_ATTEMPTS):
            lease = await table.get(shard_id)
            if lease is None:
                new = Lease(shard_id).sought(checkpoint.sequence, finished=checkpoint.finished)
                # A new lease: its counter starts where a fresh lease's would.
                if await table.create(new):
                    break
                continue
            try:
                await table.replace(
                    lease, lease.sought(checkpoint.sequence, finished=checkpoint.finished)
                )
            except LeaseConflict:
                continue
            break
        else:
            raise CheckpointError(f"shard {shard_id}: its lease kept changing during the seek")
