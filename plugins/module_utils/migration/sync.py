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

import threading
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Set

from ansible_collections.xms.warm_migration.plugins.module_utils.common.side_by_side import side_by_side
from ansible_collections.xms.warm_migration.plugins.module_utils.copy.journal import remaining_extents
from ansible_collections.xms.warm_migration.plugins.module_utils.migration import ownership, store
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.context import MigrationContext
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.disk_copies import (
    Attachments,
    DiskCopies,
    busy_seconds,
    copied_whole,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.errors import (
    MigrationBusyError,
    MigrationNotFoundError,
    PhaseError,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.lock import host_lock
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.plan import (
    DiskPlan,
    SyncPlan,
    journal_path,
    plan_disk,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.projection import (
    HISTORY,
    HostTimes,
    SyncSample,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.record import (
    DiskState,
    MigrationState,
    Phase,
    utcnow,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.settings import SyncSettings
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack import volumes as os_volumes
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack.attach import (
    warm_up,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere import cbt as vs_cbt
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere.errors import VSphereError


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
    snapshot_s: float = 0.0  # from asking for the sync snapshot to its removal: what vSphere keeps a delta for


def run_sync(ctx: MigrationContext, settings: SyncSettings, *, check_mode: bool = False) -> SyncOutcome:
    """Run one sync of the migration of ``ctx``'s VM (see the module doc of block_sync for the rules).

    A scheduled run (``only_when_due``) skips, with the reason, what an operator's run refuses: a
    migration not started yet, one another run holds (a seed hours long, a sync from another host)
    or one in cutover. A schedule fires every few minutes over the whole wave; failing it for a VM
    that is simply busy would page someone every run of a long seed."""
    try:
        return _run_sync(ctx, settings, check_mode)
    except (MigrationNotFoundError, MigrationBusyError, _InCutover) as err:
        if not settings.only_when_due:
            raise
        if isinstance(err, MigrationNotFoundError):
            return SyncOutcome(changed=False, kind="skipped", reason="not started (the seed playbook starts it)")
        reason = "in cutover" if isinstance(err, _InCutover) else f"busy: {err.message}"
        state = store.load(ctx.openstack, ctx.migration_id)
        return SyncOutcome(changed=False, kind="skipped", reason=reason, state=state)


def _run_sync(ctx: MigrationContext, settings: SyncSettings, check_mode: bool) -> SyncOutcome:
    """run_sync's body. The record decides what to do twice: read first, so that a skip or check mode
    costs no lock, and again under the hold, where the decision counts."""
    state = store.load(ctx.openstack, ctx.migration_id)
    skip = _skip(state, settings)
    if skip is not None:
        return skip
    ownership.ensure_free(state, ownership.Observations(settings.state_dir))
    if check_mode:
        with host_lock(settings.state_dir, ctx.migration_id):
            return _predict(ctx, state, settings)
    skipped: List[SyncOutcome] = []

    def may_sync(held_state: MigrationState) -> None:
        late = _skip(held_state, settings)
        if late is not None:
            skipped.append(late)
            raise _Skipped()

    try:
        with ownership.hold(ctx.openstack, ctx.migration_id, settings.state_dir, check=may_sync) as held:
            try:
                outcome = sync_held(ctx, held, settings)
            except Exception:
                held.state.failed_syncs += 1  # written with the error when the hold is released
                raise
    except _Skipped:
        return skipped[0]
    outcome.warnings.extend(held.heartbeat.warnings())
    return outcome


class _Skipped(Exception):
    """The record, read again under the hold, says there is nothing to do (paused meanwhile, say)."""


class _InCutover(PhaseError):
    """The migration's cutover has begun: its syncs are the cutover's own now."""


def _skip(state: MigrationState, settings: SyncSettings) -> Optional[SyncOutcome]:
    """Why no sync runs now (an outcome that says so), or None; PhaseError once the cutover has begun."""
    if state.phase is Phase.COMPLETED:
        # A wave's sync schedule (or a rerun of the seed playbook) may still fire after cutover: nothing to do.
        return SyncOutcome(changed=False, kind="skipped", reason="completed", state=state)
    if state.phase is Phase.CUTOVER:
        raise _InCutover(
            f"migration {state.migration_id} is in phase '{state.phase.value}'; syncs end at cutover",
            hint="Use the cutover module to finish it, or migration_info to see its state",
        )
    if state.paused:
        return SyncOutcome(changed=False, kind="skipped", reason="paused", state=state)
    if settings.only_when_due and state.seeded and not state.sync_due():
        return SyncOutcome(changed=False, kind="skipped", reason=f"not due (cadence {state.cadence})", state=state)
    return None


def source_disks(inv, state: MigrationState) -> Dict[int, object]:
    """The VM's disks by key, checked against the migration's volumes (PhaseError when they differ)."""
    check_disk_set(inv.name, {d.key for d in inv.disks}, state)
    return {d.key: d for d in inv.disks}


def check_disk_set(vm_name: str, keys: Set[int], state: MigrationState) -> None:
    """The VM's disks (``keys``, from its inventory or a snapshot) are the migration's: PhaseError when not.

    Checked on the inventory before anything runs, and again on each sync's snapshot: a cutover's
    syncs run long after its inventory was read, and a disk added meanwhile would otherwise be left
    behind without a word."""
    missing = [d.disk_key for d in state.disks if d.disk_key not in keys]
    added = sorted(set(keys) - {d.disk_key for d in state.disks})
    if missing or added:
        raise PhaseError(
            f"the disks of VM '{vm_name}' changed since the migration was initialized"
            f" (removed: {missing or 'none'}, added: {added or 'none'})",
            hint="Run warm_migration_init again: it creates the volumes of added disks (the next sync seeds"
            " them) and, with removed_disks: keep or delete, drops the volumes of removed ones",
        )


def _ensure_cbt(vsphere, vm, inv) -> str:
    """Switch CBT on again when it was switched off or reset (vCenter then clears every change id).

    Without it the snapshot carries no change id, and a sync could only record an empty one:
    the disk would count as never seeded. Returns the warning to show, or "" when CBT was on."""
    if inv.cbt_enabled and all(d.change_id for d in inv.disks):
        return ""
    vs_cbt.enable_cbt(vsphere, vm)
    return (
        f"CBT was off on VM '{inv.name}' (disabled or reset since the last sync): switched it on again;"
        " disks whose change history it lost are copied whole"
    )


def plan_sync(ctx: MigrationContext, snap, state: MigrationState, settings: SyncSettings) -> SyncPlan:
    """The plan of every disk of the migration, as of ``snap``; the disks ask vSphere for their areas
    side by side, while the snapshot lives."""

    vsphere, vm = ctx.vsphere, ctx.vm

    def plan(disk: DiskState) -> DiskPlan:
        capacity = snap.capacities[disk.disk_key]
        return plan_disk(
            disk,
            capacity=capacity,
            force_full=settings.force_full,
            needs_full=state.needs_full_resync,
            changed_since=lambda since: vs_cbt.changed_extents(vsphere, vm, snap, disk.disk_key, since, capacity),
            remaining=lambda: remaining_extents(journal_path(settings.state_dir, state.migration_id, disk)),
        )

    return SyncPlan(list(zip(state.disks, side_by_side(plan, state.disks))))


def _predict(ctx: MigrationContext, state: MigrationState, settings: SyncSettings) -> SyncOutcome:
    """Check mode: the plan per disk, from a temporary snapshot that is removed again."""
    source_disks(ctx.inventory, state)
    with vs_cbt.sync_snapshot(ctx.vsphere, ctx.vm, quiesce=False) as snap:
        plan = plan_sync(ctx, snap, state, settings)
    outcome = SyncOutcome(changed=plan.changes, kind=plan.kind, state=state, bytes_copied=plan.data_bytes)
    outcome.disks = [_disk_report(disk, disk_plan) for disk, disk_plan in plan.disks]
    outcome.warnings = plan.warnings
    return outcome


def _disk_report(disk: DiskState, plan: DiskPlan, stats=None) -> Dict[str, object]:
    report: Dict[str, object] = {
        "disk_key": disk.disk_key,
        "label": disk.label,
        "volume_id": disk.volume_id,
        "kind": plan.kind,
        "extents": len(plan.extents),
        "planned_bytes": plan.data_bytes,
        "change_id": disk.change_id or None,
    }
    if stats is not None:
        report["stats"] = stats.as_dict()
    return report


def sync_held(ctx: MigrationContext, held: ownership.Held, settings: SyncSettings) -> SyncOutcome:
    """The sync itself, in a run that holds the migration (ownership.hold): a sync of its own, or the
    cutover's syncs (the convergence syncs of a downtime budget and the final delta).

    In phase ``cutover`` the phase stays; otherwise it is ``seeding`` or ``syncing`` from the first
    write and ``ready`` at the end. The end's bookkeeping (counters, history, phase) is written here,
    so a cutover that syncs several times keeps each sync's figures even if it fails later."""
    state, heartbeat = held.state, held.heartbeat
    for_cutover = state.phase is Phase.CUTOVER
    if settings.attach_mode == "brick" and any(copied_whole(disk, state, settings) for disk in state.disks):
        # Volumes attach before the snapshot: os-brick is made ready while vSphere and the record are asked.
        threading.Thread(target=warm_up, name="xms-brick-warm-up", daemon=True).start()
    vsphere, vm, openstack, inv = ctx.vsphere, ctx.vm, ctx.openstack, ctx.inventory
    disks_by_key = source_disks(inv, state)
    outcome = SyncOutcome(changed=True, kind="incremental" if state.seeded else "seed", state=state)
    started = time.monotonic()
    if not for_cutover:
        state.phase = Phase.SYNCING if state.seeded else Phase.SEEDING
        store.save_common(openstack, state)
    vs_cbt.remove_orphan_snapshots(vsphere, vm)
    warning = _ensure_cbt(vsphere, vm, inv)
    if warning:
        outcome.warnings.append(warning)
    snapshot_time = utcnow()
    with Attachments(openstack, settings) as attachments:
        attachments.attach([  # copied whole for sure: the first batch attached before the snapshot exists
            disk for disk in state.disks
            if copied_whole(disk, state, settings) and disks_by_key[disk.disk_key].capacity <= disk.capacity
        ][: settings.parallel_disks])  # fmt: skip
        snapshot_started = time.monotonic()
        with vs_cbt.sync_snapshot(vsphere, vm, quiesce=settings.quiesce) as snap:
            check_disk_set(inv.name, set(snap.capacities), state)  # the disk set now, not at the run's start
            for disk in state.disks:
                if not snap.change_ids.get(disk.disk_key):
                    raise VSphereError(
                        f"disk {disk.label or disk.disk_key} of VM '{inv.name}' has no change id in the sync"
                        " snapshot: CBT is not active on it",
                        hint="Check that CBT is enabled on the VM (ctkEnabled) and that the disk is not independent",
                    )
            sync_plan = plan_sync(ctx, snap, state, settings)
            outcome.kind = sync_plan.kind
            outcome.warnings.extend(sync_plan.warnings)
            # Every volume is large enough before the first byte is copied: a volume that cannot grow
            # stops the sync with nothing copied and nothing recorded. A disk not larger than recorded
            # fits its volume already (Cinder never shrinks one): no call for it.
            for disk, _plan in sync_plan.disks:
                if snap.capacities[disk.disk_key] > disk.capacity:
                    attachments.release(disk)  # grown since it was attached: Cinder extends only a free one
                    os_volumes.extend_volume(openstack, disk.volume_id, snap.capacities[disk.disk_key])
            heartbeat.expect(sum(plan.bytes for _disk, plan in sync_plan.disks))
            copies = DiskCopies(ctx, snap, snapshot_time, state, settings, heartbeat, disks_by_key)
            copies.advance_idle([disk for disk, plan in sync_plan.disks if not plan.bytes])
            done = copies.run([(disk, plan) for disk, plan in sync_plan.disks if plan.bytes], attachments)
        outcome.snapshot_s = time.monotonic() - snapshot_started
    bytes_full = sum(c.stats.bytes_read for c in done if c.plan.kind in ("seed", "full_resync"))
    bytes_incr = sum(c.stats.bytes_read for c in done if c.plan.kind not in ("seed", "full_resync"))
    zeroed = sum(c.stats.bytes_zeroed for c in done)
    copy_s = busy_seconds([(c.ended - c.stats.elapsed_s, c.ended) for c in done])
    copied = {c.disk.disk_key: c for c in done}
    for disk, plan in sync_plan.disks:
        own = copied.get(disk.disk_key)
        outcome.disks.append(_disk_report(disk, plan, own.stats if own else None))
    outcome.bytes_copied = bytes_full + bytes_incr
    # The volumes changed only if bytes were written or zeroed (a guest's TRIM is a hole: zeroed
    # without a read); advancing the change ids alone is bookkeeping.
    outcome.changed = outcome.bytes_copied > 0 or zeroed > 0 or outcome.kind != "incremental"
    outcome.duration_s = time.monotonic() - started
    sample = SyncSample(snapshot_time, outcome.kind, outcome.bytes_copied, outcome.duration_s, copy_s)
    outcome.rate = record_sync(openstack, state, settings.state_dir, sample, bytes_full=bytes_full)
    return outcome


def record_sync(openstack, state: MigrationState, state_dir: str, sample: SyncSample, *, bytes_full: int) -> float:
    """The end of a sync, as a sync and a seed import record it: counters (``bytes_full`` of the
    sample's bytes were whole copies, the rest incremental), the history, this host's measured times,
    the rate, and phase ``ready`` unless the cutover runs; written at once. Returns the rate (bytes/s)."""
    state.bytes_full += bytes_full
    state.bytes_incr += sample.bytes - bytes_full
    state.sync_count += 1
    state.synced_at = sample.snapshot_at
    state.history = [*state.history, sample][-HISTORY:]
    state.estimates = {**state.estimates, **HostTimes(state_dir).load()}
    state.rate = sample.bytes / sample.duration_s if sample.duration_s > 0 else 0.0
    state.needs_full_resync = False
    state.failed_syncs = 0
    state.progress_done = state.progress_total = 0
    if state.phase is not Phase.CUTOVER:
        state.phase = Phase.READY
    store.save_common(openstack, state)
    return state.rate
