"""Copying a single esm's checkpoints into the lease table, so that one replica can grow into
several without replaying anything."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from esm.leases.model import Lease, sentinel_of
from esm.leases.table import LeaseTable
from esm.protocols import CheckpointStore

__all__ = ["CopyReport", "copy_checkpoints"]


@dataclass
class CopyReport:
    copied: list[str] = field(default_factory=list)
    """MAPPING/SHARD of each checkpoint written as a new lease."""
    kept: list[str] = field(default_factory=list)
    """MAPPING/SHARD whose lease existed already: left as it is (it may be newer)."""

    def lines(self) -> list[str]:
        return [
            f"copied {len(self.copied)} checkpoint(s) into leases",
            *(f"  {name}" for name in self.copied),
            *(
                [f"kept {len(self.kept)} lease(s) that existed already:"]
                + [f"  {name}" for name in self.kept]
                if self.kept
                else []
            ),
        ]


async def copy_checkpoints(
    source: CheckpointStore,
    mappings: dict[str, str],
    table_of: Callable[[str], LeaseTable],
) -> CopyReport:
    """Write each checkpoint of `mappings` (name by mapping id) found in `source` as a free
    lease at that checkpoint. A lease that exists already is never overwritten: the table
    may have moved on since the state file was last written."""
    report = CopyReport()
    for mapping_id, name in sorted(mappings.items(), key=lambda item: item[1]):
        table = table_of(mapping_id)
        for shard_id, checkpoint in sorted((await source.load(mapping_id)).items()):
            lease = Lease(shard_id, checkpoint=sentinel_of(checkpoint))
            where = f"{name}/{shard_id} at {lease.checkpoint}"
            if await table.create(lease):
                report.copied.append(where)
            else:
                report.kept.append(where)
    return report
