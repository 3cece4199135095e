"""One sync of one migration: snapshot, plan per disk, copy, advance the change ids.

A seed and an incremental are the same step with a different plan, so they
share this code; the cutover's final delta calls it too. The order of writes
is what makes an interrupted sync safe (see record.py): before a disk is
copied its record names the snapshot being copied (``pending_change_id``);
after the copy is flushed its ``change_id`` advances; the migration-wide
fields (``ready``, ``synced_at``, counters) are written last.

Resuming: when a sync stopped part-way (killed, or failed), the next one takes
a new snapshot and copies, per disk, what the stopped one had not flushed yet
(read from the engine's resume journal) plus what changed since the stopped
one's snapshot (asked from CBT). Nothing copied before is copied again unless
it changed, and the target ends equal to the new snapshot.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

from ansible_collections.xms.warm_migration.plugins.module_utils.copy.copier import CopyOptions, copy_extents
from ansible_collections.xms.warm_migration.plugins.module_utils.copy.extents import Extent, merge_extents
from ansible_collections.xms.warm_migration.plugins.module_utils.copy.journal import remaining_extents
from ansible_collections.xms.warm_migration.plugins.module_utils.copy.verify import verify_extents
from ansible_collections.xms.warm_migration.plugins.module_utils.migration import store
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.errors import (
    MigrationBusyError,
    PhaseError,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.lock import host_lock, on_this_host, owner_id
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.record import (
    DiskState,
    MigrationState,
    utcnow,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack.attach import attach_for_write
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere import cbt as vs_cbt
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere import inventory as vs_inventory
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere.datapath import open_disk

HEARTBEAT_EVERY_S = 10.0


@dataclass
class SyncSettings:
    """How to run a sync on this conversion host (module parameters, already validated)."""

    state_dir: str
    vddk_libdir: str = ""
    vddk_transports: Optional[str] = None
    attach_mode: str = "brick"
    conversion_server: Optional[str] = None
    quiesce: bool = False
    force_full: bool = False
    only_when_due: bool = False
    bandwidth_limit: Optional[int] = None
    verify: bool = False


@dataclass
class DiskPlan:
    """What one disk's sync will copy, and why."""

    kind: str  # seed | incremental | resume | full_resync
    extents: List[Extent]
    target_is_zero: bool = False
    warning: str = ""

    @property
    def bytes(self) -> int:
        return sum(e.length for e in self.extents)


@dataclass
class SyncOutcome:
    """What a sync did (or, in check mode, would do)."""

    changed: bool
    kind: str  # seed | incremental | full_resync | resume | skipped
    reason: str = ""
    bytes_copied: int = 0
    duration_s: float = 0.0
    rate: float = 0.0
    warnings: List[str] = field(default_factory=list)
    disks: List[Dict[str, object]] = field(default_factory=list)
    state: Optional[MigrationState] = None


def plan_disk(
    disk: DiskState,
    *,
    force_full: bool,
    changed_since: Callable[[Optional[str]], List[Extent]],
    remaining: Callable[[], Optional[List[Extent]]],
) -> DiskPlan:
    """Decide what to copy for one disk.

    ``changed_since(None)`` returns the allocated areas of the snapshot;
    ``changed_since(id)`` the areas changed since change id ``id`` (raises
    CbtResetError when CBT cannot answer for ``id``). ``remaining()`` returns
    the extents an interrupted copy of this disk had not flushed, or None when
    that is not known.
    """
    whole = DiskPlan("full_resync", [Extent(0, disk.capacity)])
    if force_full:
        return whole
    if disk.pending_change_id:
        left = remaining()
        if left is not None:
            try:
                since = changed_since(disk.pending_change_id)
            except vs_cbt.CbtResetError as err:
                whole.warning = f"disk {disk.label or disk.disk_key}: CBT was reset ({err}); copying the whole disk"
                return whole
            return DiskPlan("resume", merge_extents(left + since))
        if not disk.change_id:
            # A seed stopped without a usable journal: what it wrote is unknown, so rewrite it all.
            return whole
    if not disk.change_id:
        return DiskPlan("seed", changed_since(None), target_is_zero=True)
    try:
        return DiskPlan("incremental", changed_since(disk.change_id))
    except vs_cbt.CbtResetError as err:
        whole.warning = f"disk {disk.label or disk.disk_key}: CBT was reset ({err}); copying the whole disk"
        return whole


def journal_path(state_dir: str, migration_id: str, disk: DiskState) -> str:
    """The resume journal of copying ``disk`` from the snapshot its record names as pending.

    Keyed by that change id, so a journal is only ever read back for the very
    sync that wrote it: a journal of an earlier, finished sync can never make
    an unfinished one look done.
    """
    tag = hashlib.sha256(disk.pending_change_id.encode()).hexdigest()[:16]
    return os.path.join(state_dir, migration_id, f"disk-{disk.disk_key}-{tag}.journal")


class _Heartbeat:
    """Writes progress into the record now and then, so migration_info can show a running sync."""

    def __init__(self, client, state: MigrationState, total: int) -> None:
        self.client, self.state = client, state
        self.base = 0
        self.state.progress_done, self.state.progress_total = 0, total
        self.started = time.monotonic()
        self.last = 0.0

    def disk_done(self, nbytes: int) -> None:
        self.base += nbytes

    def __call__(self, progress) -> None:
        now = time.monotonic()
        if now - self.last < HEARTBEAT_EVERY_S:
            return
        self.last = now
        self.state.progress_done = self.base + progress.done
        self.state.rate = progress.rate
        self.state.heartbeat = utcnow()
        store.save_common(self.client, self.state)


def run_sync(
    vsphere,
    vm,
    openstack,
    migration_id: str,
    settings: SyncSettings,
    *,
    check_mode: bool = False,
) -> SyncOutcome:
    """Run one sync of ``migration_id`` (see the module doc of block_sync for the rules)."""
    state = store.load(openstack, migration_id)
    if state.phase == "completed":
        # A wave's sync schedule (or a rerun of the seed playbook) may still fire after cutover: nothing to do.
        return SyncOutcome(changed=False, kind="skipped", reason="completed", state=state)
    if state.phase == "cutover":
        raise PhaseError(
            f"migration {migration_id} is in phase '{state.phase}'; syncs end at cutover",
            hint="Use the cutover module to finish it, or migration_info to see its state",
        )
    if state.paused:
        return SyncOutcome(changed=False, kind="skipped", reason="paused", state=state)
    if settings.only_when_due and state.seeded and not state.sync_due():
        return SyncOutcome(changed=False, kind="skipped", reason=f"not due (cadence {state.cadence})", state=state)
    ensure_not_busy(state)
    with host_lock(settings.state_dir, migration_id):
        if check_mode:
            return _predict(vsphere, vm, state, settings)
        return sync_locked(vsphere, vm, openstack, state, settings)


def ensure_not_busy(state: MigrationState) -> None:
    """Refuse when another host's sync or cutover of this migration reported recently.

    An owner on this host is left to the flock: if its process died (killed, rebooted), the
    flock is free and its fresh heartbeat must not block the rerun that resumes its work."""
    if state.is_busy() and not on_this_host(state.owner):
        raise MigrationBusyError(
            f"migration {state.migration_id} is being synced by {state.owner}"
            f" (last report {state.heartbeat:%H:%M:%S} UTC)",
            hint="Wait for it to finish (see migration_info for its progress), then run again",
        )


def _source_disks(vsphere, vm, state: MigrationState) -> Dict[int, object]:
    """The VM's disks by key, checked against the migration's volumes."""
    inv = vs_inventory.inventory(vsphere, vm)
    disks = {d.key: d for d in inv.disks}
    missing = [d.disk_key for d in state.disks if d.disk_key not in disks]
    added = sorted(set(disks) - {d.disk_key for d in state.disks})
    if missing or added:
        raise PhaseError(
            f"the disks of VM '{inv.name}' changed since the migration was initialized"
            f" (removed: {missing or 'none'}, added: {added or 'none'})",
            hint="Run warm_migration_init again to add volumes for new disks; removed disks need a new migration",
        )
    return disks


def _predict(vsphere, vm, state: MigrationState, settings: SyncSettings) -> SyncOutcome:
    """Check mode: the plan per disk, from a temporary snapshot that is removed again."""
    _source_disks(vsphere, vm, state)
    outcome = SyncOutcome(changed=True, kind="seed" if not state.seeded else "incremental", state=state)
    with vs_cbt.sync_snapshot(vsphere, vm, quiesce=False) as snap:
        for disk in state.disks:
            plan = plan_disk(
                disk,
                force_full=settings.force_full,
                changed_since=lambda since, d=disk: vs_cbt.changed_extents(
                    vsphere, vm, snap, d.disk_key, since, d.capacity
                ),
                remaining=lambda d=disk: remaining_extents(journal_path(settings.state_dir, state.migration_id, d)),
            )
            outcome.disks.append(_disk_report(disk, plan))
            outcome.bytes_copied += plan.bytes
            if plan.warning:
                outcome.warnings.append(plan.warning)
    return outcome


def _disk_report(disk: DiskState, plan: DiskPlan, stats=None) -> Dict[str, object]:
    report: Dict[str, object] = {
        "disk_key": disk.disk_key,
        "label": disk.label,
        "volume_id": disk.volume_id,
        "kind": plan.kind,
        "extents": len(plan.extents),
        "planned_bytes": plan.bytes,
        "change_id": disk.change_id or None,
    }
    if stats is not None:
        report["stats"] = stats.as_dict()
    return report


def sync_locked(vsphere, vm, openstack, state: MigrationState, settings: SyncSettings) -> SyncOutcome:
    """The sync itself; the caller holds the host lock (run_sync, or the cutover's final delta)."""
    for_cutover = state.phase == "cutover"
    source_disks = _source_disks(vsphere, vm, state)
    outcome = SyncOutcome(changed=True, kind="incremental" if state.seeded else "seed", state=state)
    started = time.monotonic()
    if not for_cutover:
        state.phase = "syncing" if state.seeded else "seeding"
    state.owner, state.heartbeat, state.last_error = owner_id(), utcnow(), ""
    store.save_common(openstack, state)
    try:
        vs_cbt.remove_orphan_snapshots(vsphere, vm)
        snapshot_time = utcnow()
        bytes_full = bytes_incr = 0
        with vs_cbt.sync_snapshot(vsphere, vm, quiesce=settings.quiesce) as snap:
            plans = []
            for disk in state.disks:
                plan = plan_disk(
                    disk,
                    force_full=settings.force_full or state.needs_full_resync,
                    changed_since=lambda since, d=disk: vs_cbt.changed_extents(
                        vsphere, vm, snap, d.disk_key, since, d.capacity
                    ),
                    remaining=lambda d=disk: remaining_extents(journal_path(settings.state_dir, state.migration_id, d)),
                )
                plans.append((disk, plan))
                if plan.warning:
                    outcome.warnings.append(plan.warning)
            heartbeat = _Heartbeat(openstack, state, sum(plan.bytes for _disk, plan in plans))
            for disk, plan in plans:
                stale = journal_path(settings.state_dir, state.migration_id, disk) if disk.pending_change_id else None
                disk.pending_change_id = snap.change_ids[disk.disk_key]
                store.save_disk(openstack, state, disk)
                jpath = journal_path(settings.state_dir, state.migration_id, disk)
                stats = _copy_disk(
                    vsphere, vm, openstack, snap, source_disks[disk.disk_key], disk, plan, jpath, settings, heartbeat
                )
                # The copy returned, so its data is flushed: only now may the change id advance.
                disk.change_id, disk.pending_change_id = disk.pending_change_id, ""
                store.save_disk(openstack, state, disk)
                for done in {jpath, stale} - {None}:
                    _remove(done)
                heartbeat.disk_done(plan.bytes)
                if plan.kind in ("seed", "full_resync"):
                    bytes_full += stats.bytes_read
                else:
                    bytes_incr += stats.bytes_read
                outcome.disks.append(_disk_report(disk, plan, stats))
        duration = time.monotonic() - started
        kinds = {d["kind"] for d in outcome.disks}
        outcome.kind = (
            "seed"
            if kinds == {"seed"}
            else ("full_resync" if "full_resync" in kinds else ("resume" if "resume" in kinds else "incremental"))
        )
        outcome.bytes_copied = bytes_full + bytes_incr
        # The volumes changed only if bytes were written; advancing the change ids alone is bookkeeping.
        outcome.changed = outcome.bytes_copied > 0 or outcome.kind != "incremental"
        outcome.duration_s = duration
        outcome.rate = outcome.bytes_copied / duration if duration > 0 else 0.0
        state.bytes_full += bytes_full
        state.bytes_incr += bytes_incr
        state.sync_count += 1
        state.synced_at = snapshot_time
        state.rate = outcome.rate
        state.needs_full_resync = False
        if not for_cutover:
            state.phase = "ready"
        return outcome
    except Exception as err:
        state.last_error = str(err)
        raise
    finally:
        state.owner, state.heartbeat = "", None
        state.progress_done = state.progress_total = 0
        try:
            store.save_common(openstack, state)
        except Exception:  # the sync's own error matters more than a failed bookkeeping write
            if not state.last_error:
                raise


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _copy_disk(
    vsphere,
    vm,
    openstack,
    snap,
    source_disk,
    disk: DiskState,
    plan: DiskPlan,
    jpath: str,
    settings: SyncSettings,
    heartbeat: _Heartbeat,
):
    """Copy one disk's plan from the snapshot into its volume; returns the engine's stats after the flush."""
    os.makedirs(os.path.dirname(jpath), mode=0o700, exist_ok=True)
    options = CopyOptions(target_is_zero=plan.target_is_zero, bandwidth_limit=settings.bandwidth_limit)
    with (
        open_disk(
            vsphere, vm, snap, source_disk, vddk_libdir=settings.vddk_libdir, transports=settings.vddk_transports
        ) as uri,
        attach_for_write(
            openstack, disk.volume_id, mode=settings.attach_mode, server_id=settings.conversion_server
        ) as device,
    ):
        stats = copy_extents(
            uri, device, plan.extents, size=disk.capacity, options=options, journal_path=jpath, progress=heartbeat
        )
        if settings.verify:
            verify_extents(uri, device, plan.extents).raise_for_mismatch()
    return stats
