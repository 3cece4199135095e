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
import queue
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple

from ansible_collections.xms.warm_migration.plugins.module_utils.common.side_by_side import side_by_side
from ansible_collections.xms.warm_migration.plugins.module_utils.copy.copier import (
    CopyOptions,
    CopyStats,
    RateCap,
    copy_extents,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.copy.errors import CopyError, CopyStopped
from ansible_collections.xms.warm_migration.plugins.module_utils.copy.extents import (
    Extent,
    merge_extents,
    subtract_extents,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.copy.journal import remaining_extents
from ansible_collections.xms.warm_migration.plugins.module_utils.copy.verify import verify_extents
from ansible_collections.xms.warm_migration.plugins.module_utils.migration import ownership, store
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.errors import PhaseError
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.lock import host_lock
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
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack import volumes as os_volumes
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack.attach import (
    HeldAttachment,
    close_all,
    warm_up,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere import cbt as vs_cbt
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere import inventory as vs_inventory
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere.datapath import DiskServer
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere.errors import VSphereError

# Disks of one VM copied at once. vSphere serves each disk at about 1 Gbps over NFC, so a VM's
# speed comes from reading its disks side by side; each copy holds its own buffer pool (32 MiB).
PARALLEL_DISKS = 4
# How far a disk copy's thread steps back for the control steps of other syncs (lower_copy_priority).
COPY_NICENESS = 10


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
    parallel_disks: int = PARALLEL_DISKS


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


def run_sync(
    vsphere,
    vm,
    openstack,
    migration_id: str,
    settings: SyncSettings,
    *,
    check_mode: bool = False,
) -> SyncOutcome:
    """Run one sync of ``migration_id`` (see the module doc of block_sync for the rules).

    The record decides what to do twice: read first, so that a skip or check mode costs no lock,
    and again under the hold, where the decision counts."""
    state = store.load(openstack, migration_id)
    skip = _skip(state, settings)
    if skip is not None:
        return skip
    ownership.ensure_free(state, ownership.Observations(settings.state_dir))
    if check_mode:
        with host_lock(settings.state_dir, migration_id):
            return _predict(vsphere, vm, state, settings)
    skipped: List[SyncOutcome] = []

    def may_sync(held_state: MigrationState) -> None:
        late = _skip(held_state, settings)
        if late is not None:
            skipped.append(late)
            raise _Skipped()

    try:
        with ownership.hold(openstack, migration_id, settings.state_dir, check=may_sync) as held:
            outcome = sync_held(vsphere, vm, openstack, held, settings)
    except _Skipped:
        return skipped[0]
    outcome.warnings.extend(held.heartbeat.warnings())
    return outcome


class _Skipped(Exception):
    """The record, read again under the hold, says there is nothing to do (paused meanwhile, say)."""


def _skip(state: MigrationState, settings: SyncSettings) -> Optional[SyncOutcome]:
    """Why no sync runs now (an outcome that says so), or None; PhaseError once the cutover has begun."""
    if state.phase is Phase.COMPLETED:
        # A wave's sync schedule (or a rerun of the seed playbook) may still fire after cutover: nothing to do.
        return SyncOutcome(changed=False, kind="skipped", reason="completed", state=state)
    if state.phase is Phase.CUTOVER:
        raise PhaseError(
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
    disks = {d.key: d for d in inv.disks}
    missing = [d.disk_key for d in state.disks if d.disk_key not in disks]
    added = sorted(set(disks) - {d.disk_key for d in state.disks})
    if missing or added:
        raise PhaseError(
            f"the disks of VM '{inv.name}' changed since the migration was initialized"
            f" (removed: {missing or 'none'}, added: {added or 'none'})",
            hint="Run warm_migration_init again: it creates the volumes of added disks (the next sync seeds"
            " them) and, with removed_disks: keep or delete, drops the volumes of removed ones",
        )
    return disks


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


def plan_sync(vsphere, vm, snap, state: MigrationState, settings: SyncSettings) -> SyncPlan:
    """The plan of every disk of the migration, as of ``snap``; the disks ask vSphere for their areas
    side by side, while the snapshot lives."""

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


def _predict(vsphere, vm, state: MigrationState, settings: SyncSettings) -> SyncOutcome:
    """Check mode: the plan per disk, from a temporary snapshot that is removed again."""
    source_disks(vs_inventory.inventory(vsphere, vm), state)
    with vs_cbt.sync_snapshot(vsphere, vm, quiesce=False) as snap:
        plan = plan_sync(vsphere, vm, snap, state, settings)
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


def sync_held(vsphere, vm, openstack, held: ownership.Held, settings: SyncSettings, inv=None) -> SyncOutcome:
    """The sync itself, in a run that holds the migration (ownership.hold): a sync of its own, or the
    cutover's syncs (the convergence syncs of a downtime budget and the final delta). ``inv`` is the
    VM's inventory when the caller has read it already.

    In phase ``cutover`` the phase stays; otherwise it is ``seeding`` or ``syncing`` from the first
    write and ``ready`` at the end. The end's bookkeeping (counters, history, phase) is written here,
    so a cutover that syncs several times keeps each sync's figures even if it fails later."""
    state, heartbeat = held.state, held.heartbeat
    for_cutover = state.phase is Phase.CUTOVER
    if settings.attach_mode == "brick" and any(_copied_whole(disk, state, settings) for disk in state.disks):
        # Volumes attach before the snapshot: os-brick is made ready while vSphere and the record are asked.
        threading.Thread(target=warm_up, name="xms-brick-warm-up", daemon=True).start()
    inv = inv or vs_inventory.inventory(vsphere, vm)
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
    with _Attachments(openstack, settings) as attachments:
        attachments.attach([  # copied whole for sure: attached before the snapshot exists
            disk for disk in state.disks
            if _copied_whole(disk, state, settings) and disks_by_key[disk.disk_key].capacity <= disk.capacity
        ])  # fmt: skip
        snapshot_started = time.monotonic()
        with vs_cbt.sync_snapshot(vsphere, vm, quiesce=settings.quiesce) as snap:
            for disk in state.disks:
                if not snap.change_ids.get(disk.disk_key):
                    raise VSphereError(
                        f"disk {disk.label or disk.disk_key} of VM '{inv.name}' has no change id in the sync"
                        " snapshot: CBT is not active on it",
                        hint="Check that CBT is enabled on the VM (ctkEnabled) and that the disk is not independent",
                    )
            sync_plan = plan_sync(vsphere, vm, snap, state, settings)
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
            copies = _DiskCopies(vsphere, vm, openstack, snap, state, settings, heartbeat, disks_by_key)
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
    outcome.rate = record_sync(
        openstack, state, settings.state_dir, kind=outcome.kind, snapshot_at=snapshot_time,
        duration_s=outcome.duration_s, copy_s=copy_s, bytes_full=bytes_full, bytes_incr=bytes_incr,
    )  # fmt: skip
    return outcome


def record_sync(
    openstack,
    state: MigrationState,
    state_dir: str,
    *,
    kind: str,
    snapshot_at: datetime,
    duration_s: float,
    copy_s: float,
    bytes_full: int,
    bytes_incr: int,
) -> float:
    """The end of a sync, as a sync and a seed import record it: counters, the history, this host's
    measured times, the rate, and phase ``ready`` unless the cutover runs; written at once. Returns
    the rate (bytes/s)."""
    copied = bytes_full + bytes_incr
    state.bytes_full += bytes_full
    state.bytes_incr += bytes_incr
    state.sync_count += 1
    state.synced_at = snapshot_at
    state.history = [*state.history, SyncSample(snapshot_at, kind, copied, duration_s, copy_s)][-HISTORY:]
    state.estimates = {**state.estimates, **HostTimes(state_dir).load()}
    state.rate = copied / duration_s if duration_s > 0 else 0.0
    state.needs_full_resync = False
    state.progress_done = state.progress_total = 0
    if state.phase is not Phase.CUTOVER:
        state.phase = Phase.READY
    store.save_common(openstack, state)
    return state.rate


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


@dataclass
class DiskCopy:
    """One disk copied by a sync: its plan, the engine's stats, and when the copy ended (monotonic)."""

    disk: DiskState
    plan: DiskPlan
    stats: CopyStats
    ended: float


class _DiskCopies:
    """The copies of one sync: all from its one snapshot, up to ``parallel_disks`` at once.

    The calling thread starts each disk's nbdkit, records the pending change ids, and afterwards
    stops each nbdkit and advances its change id; one thread per disk only runs the copy engine (and
    the verification), and each volume is held by a thread of its own (_Attachments, which detaches
    after the snapshot is gone). So the record's writes are the calling thread's (it waits for them,
    made side by side), and each process whose lifetime is tied to the thread that started it
    (nbdkit's --exit-with-parent, a format layer's qemu-storage-daemon) is started by a thread that
    outlives its use. Each disk keeps the sync's order of writes (pending change id, copy, flush,
    change id), so no disk's record depends on another's. When one disk fails the others are
    stopped: each journals what it had flushed, and the rerun resumes every disk from there. A disk
    with nothing to copy costs no attachment and no nbdkit: only its change id advances."""

    def __init__(self, vsphere, vm, openstack, snap, state, settings: SyncSettings, heartbeat, disks_by_key) -> None:
        self.vsphere, self.vm, self.openstack, self.snap = vsphere, vm, openstack, snap
        self.state, self.settings, self.heartbeat, self.disks_by_key = state, settings, heartbeat, disks_by_key
        self.stop = threading.Event()
        self.finished: queue.Queue[Tuple[int, object]] = queue.Queue()

    def advance_idle(self, disks: List[DiskState]) -> None:
        """Nothing to copy: ``disks`` equal the snapshot already, so their change ids advance at once."""
        self._advance(disks, [self._journal(disk) for disk in disks if disk.pending_change_id])

    def _advance(self, disks: List[DiskState], journals: List[Optional[str]]) -> None:
        """The volumes hold the snapshot's disks (flushed): their change ids and sizes advance, ``journals`` go."""
        for disk in disks:
            disk.change_id, disk.pending_change_id = self.snap.change_ids[disk.disk_key], ""
            disk.capacity = self.snap.capacities[disk.disk_key]
        store.save_disks(self.openstack, self.state, disks)
        for path in set(journals) - {None}:
            _remove(path)

    def run(self, work: List[Tuple[DiskState, DiskPlan]], attachments: _Attachments) -> List[DiskCopy]:
        """Copy ``work`` into the volumes ``attachments`` holds; the first real failure (not a disk stopped
        because of it) is raised."""
        waiting = list(work)
        options = copy_options(self.settings, at_once=min(self.settings.parallel_disks, len(work)))
        active: Dict[int, _Active] = {}
        done: List[DiskCopy] = []
        failures: List[BaseException] = []
        try:
            while active or (waiting and not failures):
                room = self.settings.parallel_disks - len(active)
                if waiting and not failures and room > 0:
                    batch, waiting = waiting[:room], waiting[room:]
                    try:
                        self._start(batch, attachments, options, active)
                    except Exception as err:
                        failures.append(err)
                        self.stop.set()
                if not active:
                    break
                try:
                    key, result = self.finished.get(timeout=0.5)
                except queue.Empty:
                    continue
                try:
                    done.append(self._end(active.pop(key), result))
                except Exception as err:
                    failures.append(err)
                    self.stop.set()
        except BaseException:  # interrupted: the copies stop (each journals what it flushed) and are closed
            self.stop.set()
            for running in active.values():
                running.thread.join()
                running.started.server.close()
            raise
        if failures:
            raise next((err for err in failures if not isinstance(err, CopyStopped)), failures[0])
        return done

    def _start(self, batch, attachments: _Attachments, options: CopyOptions, active: Dict[int, _Active]) -> None:
        """Start the copies of ``batch`` into ``active``: first each disk's source server, then (while
        the servers come up) the disks' pending change ids and their volumes, each side by side, then,
        as each server serves, its copy thread. A pending change id must be recorded before the first
        byte is written, not before a server that only reads starts. On a failure (raised, naming the
        disk) what it had started and not handed to ``active`` is closed."""
        started: List[_Starting] = []
        disk = batch[0][0]
        try:
            for disk, plan in batch:
                stale = self._journal(disk) if disk.pending_change_id else None
                server = DiskServer(
                    self.vsphere, self.vm, self.snap, self.disks_by_key[disk.disk_key],
                    vddk_libdir=self.settings.vddk_libdir, transports=self.settings.vddk_transports,
                )  # fmt: skip
                started.append(_Starting(disk, plan, stale, server))
            for begun in started:
                begun.disk.pending_change_id = self.snap.change_ids[begun.disk.disk_key]
            store.save_disks(self.openstack, self.state, [begun.disk for begun in started])
            attachments.attach([begun.disk for begun in started])
            for begun in started:
                disk = begun.disk
                jpath = self._journal(disk)
                os.makedirs(os.path.dirname(jpath), mode=0o700, exist_ok=True)
                args = (disk, begun.plan, jpath, begun.server.serving(), attachments.device(disk), options)
                thread = threading.Thread(target=self._copy, args=args, name=f"xms-disk-{disk.disk_key}", daemon=True)
                thread.start()
                active[disk.disk_key] = _Active(begun, jpath, thread)
        except BaseException as err:
            for begun in started:
                if begun.disk.disk_key not in active:
                    begun.server.close()
            _naming(disk, err)
            raise

    def _copy(self, disk: DiskState, plan: DiskPlan, jpath: str, uri: str, device: str, options: CopyOptions) -> None:
        """The copy thread: bytes only (no API call, no process started here); its end is queued."""
        lower_copy_priority()
        try:
            stats = copy_extents(
                uri, device, plan.extents + plan.unallocated, size=self.snap.capacities[disk.disk_key],
                options=options, journal_path=jpath, progress=self.heartbeat.disk(disk.disk_key),
                source_zeros=plan.unallocated, stop=self.stop,
            )  # fmt: skip
            ended = time.monotonic()
            if self.settings.verify:
                verify_extents(uri, device, plan.extents).raise_for_mismatch()
            self.finished.put((disk.disk_key, DiskCopy(disk, plan, stats, ended)))
        except BaseException as err:  # handed to the calling thread, which raises it
            self.finished.put((disk.disk_key, err))

    def _end(self, running: _Active, result) -> DiskCopy:
        """Stop the source; after a copy that returned (so flushed), advance the change id. The volume
        stays attached until the snapshot is gone (see _Attachments)."""
        disk, plan, stale, server = running.started
        running.thread.join()
        try:
            server.close()
        finally:
            if isinstance(result, BaseException):
                raise _naming(disk, result)
        self._advance([disk], [running.journal, stale])
        self.heartbeat.disk_done(disk.disk_key, plan.bytes)
        return result

    def _journal(self, disk: DiskState) -> str:
        return journal_path(self.settings.state_dir, self.state.migration_id, disk)


class _Attachments:
    """The sync's volumes attached to this host, by disk key; all detached on the way out.

    Attaching and detaching cost Cinder seconds per volume (more under a wave's load), and the
    snapshot need not live through them: a disk the record says is copied whole (a seed, a forced
    or a needed full copy) is attached before the snapshot is taken, any other once its plan says
    it has something to copy, and the sync leaves them attached until the snapshot is removed.
    The volumes of one call attach side by side, and all detach side by side."""

    def __init__(self, openstack, settings: SyncSettings) -> None:
        self.openstack, self.settings = openstack, settings
        self.held: Dict[int, HeldAttachment] = {}

    def __enter__(self) -> _Attachments:
        return self

    def __exit__(self, *exc) -> None:
        held, self.held = list(self.held.values()), {}
        close_all(held, raising=exc[0] is None)

    def attach(self, disks: List[DiskState]) -> None:
        """Attach the volumes of ``disks`` not attached yet, side by side; the first failure is raised
        (what did attach stays held, and detaches on the way out)."""
        for disk in disks:
            if disk.disk_key not in self.held:
                self.held[disk.disk_key] = HeldAttachment(
                    self.openstack, disk.volume_id, mode=self.settings.attach_mode,
                    server_id=self.settings.conversion_server,
                )  # fmt: skip
        for disk in disks:
            self.held[disk.disk_key].path()

    def device(self, disk: DiskState) -> str:
        """Where this host writes ``disk``'s volume (attached by ``attach``)."""
        return self.held[disk.disk_key].path()

    def release(self, disk: DiskState) -> None:
        """Detach ``disk``'s volume now, if attached (Cinder extends only a volume nobody holds)."""
        if disk.disk_key in self.held:
            self.held.pop(disk.disk_key).close()


def _copied_whole(disk: DiskState, state: MigrationState, settings: SyncSettings) -> bool:
    """Whether the record alone says this sync copies the disk whole (so it is attached before the snapshot)."""
    return settings.force_full or state.needs_full_resync or not (disk.change_id or disk.pending_change_id)


class _Starting(NamedTuple):
    """A disk whose copy is starting: its pending change id recorded, its source server coming up."""

    disk: DiskState
    plan: DiskPlan
    stale: Optional[str]  # the journal of an earlier pending change id, removed when this copy ends
    server: DiskServer


class _Active(NamedTuple):
    """A disk being copied: how it started, its journal and its copy thread."""

    started: _Starting
    journal: str
    thread: threading.Thread


def _naming(disk: DiskState, err: BaseException) -> BaseException:
    """The engine knows offsets, not disks; with several copying at once, its errors say which disk."""
    if isinstance(err, CopyError) and not isinstance(err, CopyStopped):
        err.message = f"disk {disk.label or disk.disk_key}: {err.message}"
    return err


def lower_copy_priority() -> None:
    """Lower the calling thread's CPU priority to nice ``COPY_NICENESS`` for the rest of its life.

    A conversion host runs a wave's syncs at once: their control steps (Cinder attachments, the
    snapshot, record writes, heartbeats) are short and waited on, their copies long and hungry for
    CPU. At equal priority the copies already running slow down the control steps of the VMs that
    start next (bench/wave_bench.py, two cores shared with the lab's Cinder: a wave's last VMs
    reached their first byte up to 8 s after the first ones, and their snapshots lived that much
    longer). Idle CPU still goes to the copies; niceness only decides who waits. On Linux it holds
    for the calling thread alone (the module's main thread and its heartbeat keep theirs) and is
    inherited by the threads it starts (the engine's connections)."""
    os.nice(COPY_NICENESS)


def busy_seconds(spans: List[Tuple[float, float]]) -> float:
    """How long at least one of the ``(start, end)`` spans ran: the copy time of disks copied at once."""
    total, reach = 0.0, None
    for start, end in sorted(spans):
        if reach is None or start > reach:
            total += end - start
            reach = end
        elif end > reach:
            total += end - reach
            reach = end
    return total


def connections_per_copy(at_once: int) -> int:
    """NBD connections for each of ``at_once`` disk copies: this host's cores shared out among them.

    Each connection past the first is one more Python thread in this process; with more of them
    than cores they convoy on the GIL: eight copies (two per process) on two cores spent 2.2 times
    nbdcopy's CPU per byte with four connections each, about nbdcopy's with one
    (bench/wave_bench.py). A lone disk on a large host still gets the engine's four."""
    return max(1, min(CopyOptions.connections, (os.cpu_count() or 1) // max(1, at_once)))


def copy_options(settings: SyncSettings, at_once: int = 1) -> CopyOptions:
    """The engine's options for ``at_once`` disk copies of one run: every disk draws on one ``bandwidth_limit``,
    and this host's cores are shared out among them."""
    return CopyOptions(
        connections=connections_per_copy(at_once),
        rate_cap=RateCap(settings.bandwidth_limit) if settings.bandwidth_limit else None,
    )
