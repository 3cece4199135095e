"""What one sync copies, disk by disk: a pure plan from the record, the snapshot's sizes, CBT's answers and
the resume journals. The run and check mode use the same plan."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple

from ansible_collections.xms.warm_migration.plugins.module_utils.copy.extents import (
    Extent,
    merge_extents,
    subtract_extents,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.record import (
    DiskState,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere import cbt as vs_cbt


@dataclass
class DiskPlan:
    """What one disk's sync will copy, and why."""

    kind: str  # seed | incremental | resume | full_resync
    extents: List[Extent]
    warning: str = ""
    # Where the source holds nothing (a seed's allocated-areas answer): made zero on the volume
    # without reading the source, unless the volume itself says it reads zero there. A new
    # volume is not assumed zero: an encrypted one or a block back-end's may hold anything.
    unallocated: List[Extent] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        """All the engine handles, zeros included: the progress total."""
        return self.data_bytes + sum(e.length for e in self.unallocated)

    @property
    def data_bytes(self) -> int:
        return sum(e.length for e in self.extents)


@dataclass
class SyncPlan:
    """What one sync will do, disk by disk: built once from the sync's snapshot, used by the run and by
    check mode alike, so check mode reports the kind and the change the run would make."""

    disks: List[Tuple[DiskState, DiskPlan]]

    @property
    def kind(self) -> str:
        """seed (every disk seeds), full_resync or resume (any disk), else incremental."""
        kinds = {plan.kind for _disk, plan in self.disks}
        if kinds == {"seed"}:
            return "seed"
        for kind in ("full_resync", "resume"):
            if kind in kinds:
                return kind
        return "incremental"

    @property
    def data_bytes(self) -> int:
        return sum(plan.data_bytes for _disk, plan in self.disks)

    @property
    def warnings(self) -> List[str]:
        return [plan.warning for _disk, plan in self.disks if plan.warning]

    @property
    def changes(self) -> bool:
        """Whether the volumes change: anything but an incremental does, an incremental if anything changed."""
        return self.kind != "incremental" or any(plan.extents or plan.unallocated for _disk, plan in self.disks)


def plan_disk(
    disk: DiskState,
    *,
    capacity: int,
    force_full: bool,
    changed_since: Callable[[Optional[str]], List[Extent]],
    remaining: Callable[[], Optional[List[Extent]]],
    needs_full: bool = False,
) -> DiskPlan:
    """Decide what to copy for one disk whose snapshot holds ``capacity`` bytes.

    ``force_full`` (the operator's ask) copies the whole disk, always. ``needs_full`` (the
    record says the volume was changed outside a sync, e.g. by a conversion) copies it whole
    too, but a full copy that was interrupted resumes: its journal is the only one that can
    exist once the flag is set, since the flag is set only while no sync is pending.

    ``changed_since(None)`` returns the allocated areas of the snapshot;
    ``changed_since(id)`` the areas changed since change id ``id`` (raises
    CbtResetError when CBT cannot answer for ``id``). ``remaining()`` returns
    the extents an interrupted copy of this disk had not flushed, or None when
    that is not known.

    A disk grown since the record's size has its new area added to an incremental
    plan: vSphere does not report it changed until the guest writes it, and the
    extended volume's new area is not assumed to read as zero. A disk smaller than
    recorded cannot be a resize (vSphere cannot shrink a disk): it was replaced.
    """
    name = disk.label or disk.disk_key
    whole = DiskPlan("full_resync", [Extent(0, capacity)])
    if capacity < disk.capacity:
        whole.warning = f"disk {name}: it is smaller than recorded ({disk.capacity} bytes): replaced? copying it whole"
        return whole
    if force_full:
        return whole
    grown = [Extent(disk.capacity, capacity - disk.capacity)] if capacity > disk.capacity else []
    if disk.pending_change_id:
        left = remaining()
        if left is not None:
            try:
                since = changed_since(disk.pending_change_id)
            except vs_cbt.CbtResetError as err:
                whole.warning = f"disk {name}: CBT was reset ({err}); copying the whole disk"
                return whole
            return DiskPlan("resume", merge_extents(left + since + grown))
        if not disk.change_id:
            # A seed stopped without a usable journal: what it wrote is unknown, so rewrite it all.
            return whole
    if needs_full:
        return whole
    if not disk.change_id:
        allocated = merge_extents(changed_since(None))
        return DiskPlan("seed", allocated, unallocated=subtract_extents([Extent(0, capacity)], allocated))
    try:
        return DiskPlan("incremental", merge_extents(changed_since(disk.change_id) + grown))
    except vs_cbt.CbtResetError as err:
        whole.warning = f"disk {name}: CBT was reset ({err}); copying the whole disk"
        return whole


def journal_path(state_dir: str, migration_id: str, disk: DiskState) -> str:
    """The resume journal of copying ``disk`` from the snapshot its record names as pending.

    Keyed by that change id, so a journal is only ever read back for the very
    sync that wrote it: a journal of an earlier, finished sync can never make
    an unfinished one look done.
    """
    tag = hashlib.sha256(disk.pending_change_id.encode()).hexdigest()[:16]
    return os.path.join(state_dir, migration_id, f"disk-{disk.disk_key}-{tag}.journal")
