"""Changed Block Tracking: enabling it, the sync snapshot, and the changed areas.

The sync snapshot covers every disk of the VM at one point in time and is
removed afterwards whatever happens inside the ``with`` block. Snapshots a
crashed run left behind carry SNAPSHOT_PREFIX in their name and are removed
before a new one is taken (orphaned snapshots are the classic complaint
against backup and migration tools: they grow until the datastore fills).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional

from ansible_collections.xms.warm_migration.plugins.module_utils.copy.extents import Extent, merge_extents
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere.errors import (
    CbtResetError,
    TaskError,
    VSphereError,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere.faults import VSphereFault
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere.inventory import properties

try:
    from pyVmomi import vim, vmodl
except ImportError:  # the client reports it
    vim = vmodl = None

SNAPSHOT_PREFIX = "xms-warm-migration"


@dataclass
class SnapshotView:
    """A sync snapshot: its moref and each disk's change id, backing file and size at that point in time.

    The size is the snapshot's, not the one recorded at init: a disk grown during the warm phase
    is read, planned and extended to what the snapshot holds."""

    ref: object
    name: str
    change_ids: Dict[int, str] = field(default_factory=dict)
    backing_files: Dict[int, str] = field(default_factory=dict)
    capacities: Dict[int, int] = field(default_factory=dict)

    @property
    def moref(self) -> str:
        return self.ref._moId


def enable_cbt(client, vm) -> bool:
    """Turn CBT on and make it active (a snapshot create/remove cycle gives the disks change ids).

    Returns whether anything changed. "Enabled but not active" (no change id on
    the disks) is activated too.
    """
    props = properties(client, vm, ["config"])
    config = props["config"]
    changed = False
    if not config.changeTrackingEnabled:
        task = vm.ReconfigVM_Task(vim.vm.ConfigSpec(changeTrackingEnabled=True))
        client.wait_task(task, "enabling CBT")
        changed = True
    disks = [d for d in config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk)]
    if changed or any(not getattr(d.backing, "changeId", None) for d in disks):
        with sync_snapshot(client, vm, purpose="activating CBT"):
            pass
        changed = True
    return changed


def remove_orphan_snapshots(client, vm) -> int:
    """Remove snapshots this tool left behind (by name prefix); returns how many."""
    removed = 0
    for tree in _walk(properties(client, vm, ["snapshot"]).get("snapshot")):
        if tree.name.startswith(SNAPSHOT_PREFIX):
            client.wait_task(tree.snapshot.RemoveSnapshot_Task(removeChildren=False), f"removing snapshot {tree.name}")
            removed += 1
    return removed


def _walk(info) -> List:
    found, stack = [], list(info.rootSnapshotList) if info else []
    while stack:
        tree = stack.pop()
        found.append(tree)
        stack.extend(tree.childSnapshotList or [])
    return found


@contextmanager
def sync_snapshot(client, vm, *, quiesce: bool = False, purpose: str = "sync") -> Iterator[SnapshotView]:
    """One snapshot of every disk, removed on the way out also when the block raises."""
    name = f"{SNAPSHOT_PREFIX}-{int(time.time())}"
    description = f"{purpose} by xms.warm_migration; safe to delete when no sync runs"
    try:
        ref = client.wait_task(vm.CreateSnapshot_Task(name, description, False, quiesce), f"snapshot {name}")
    except TaskError:
        if not quiesce:
            raise
        # Quiescing needs working VMware Tools and VSS/fsfreeze; a crash-consistent snapshot still syncs correctly.
        ref = client.wait_task(vm.CreateSnapshot_Task(name, description, False, False), f"snapshot {name}")
    try:
        config = properties(client, ref, ["config"])["config"]
        view = SnapshotView(ref=ref, name=name)
        for dev in config.hardware.device:
            if isinstance(dev, vim.vm.device.VirtualDisk):
                view.change_ids[dev.key] = getattr(dev.backing, "changeId", None) or ""
                view.backing_files[dev.key] = getattr(dev.backing, "fileName", "") or ""
                view.capacities[dev.key] = dev.capacityInBytes or dev.capacityInKB * 1024
        yield view
    finally:
        client.wait_task(ref.RemoveSnapshot_Task(removeChildren=False), f"removing snapshot {name}")


def changed_extents(client, vm, snapshot: SnapshotView, disk_key: int, since_change_id: Optional[str],
                    capacity: Optional[int] = None) -> List[Extent]:  # fmt: skip
    """Areas of ``disk_key`` changed since ``since_change_id`` (None: all allocated areas), up to ``snapshot``.

    Pages by ``startOffset`` to the end of the disk: vSphere answers a part at a
    time (disks over 2 TiB always need several calls). CbtResetError when the
    change id belongs to another CBT epoch or vSphere refuses it.
    """
    current = snapshot.change_ids.get(disk_key, "")
    if since_change_id and not same_epoch(since_change_id, current):
        raise CbtResetError(
            f"disk {disk_key}: change id {since_change_id} is from another CBT epoch than {current or '(none)'}"
        )
    if since_change_id and _sequence(current) <= _sequence(since_change_id):
        # vSphere counts the sequence up at every snapshot, so a later snapshot always has a higher
        # one. Not higher: the disk went back in time (reverted to a snapshot older than the last
        # sync), and the areas changed since are not the ones that differ from what was copied.
        raise CbtResetError(f"disk {disk_key}: change id went back from {since_change_id} to {current} (reverted?)")
    if capacity is None:
        if disk_key not in snapshot.capacities:
            raise VSphereError(f"the snapshot has no disk with key {disk_key}")
        capacity = snapshot.capacities[disk_key]
    extents: List[Extent] = []
    offset = 0
    while offset < capacity:
        try:
            info = vm.QueryChangedDiskAreas(snapshot=snapshot.ref, deviceKey=disk_key, startOffset=offset,
                                            changeId=since_change_id or "*")  # fmt: skip
        except VSphereFault as err:
            if not isinstance(err.fault, vmodl.fault.InvalidArgument):
                raise
            if since_change_id:
                raise CbtResetError(
                    f"disk {disk_key}: vSphere refused change id {since_change_id}: {err.fault.msg}"
                ) from None
            raise VSphereError(f"disk {disk_key}: vSphere cannot list its allocated areas: {err.fault.msg}") from None
        extents.extend(Extent(a.start, a.length) for a in info.changedArea or [])
        if info.length <= 0:
            raise VSphereError(f"disk {disk_key}: QueryChangedDiskAreas made no progress at offset {offset}")
        offset = info.startOffset + info.length
    return merge_extents(extents)


def same_epoch(change_id: str, current: Optional[str]) -> bool:
    """Whether ``current`` continues the CBT history of ``change_id`` (no reset between them)."""
    return bool(current) and _epoch(change_id) == _epoch(current or "")


def _epoch(change_id: str) -> str:
    """A change id is '<epoch>/<sequence>'; a new epoch means CBT was reset."""
    return change_id.rsplit("/", 1)[0]


def _sequence(change_id: str) -> int:
    """The sequence part of a change id (vSphere counts it up at every snapshot of the disk)."""
    tail = change_id.rsplit("/", 1)[-1]
    return int(tail) if tail.isdigit() else 0
