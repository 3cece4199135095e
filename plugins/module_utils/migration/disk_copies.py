"""The copies of one sync: each disk from the sync's one snapshot into its volume, up to ``parallel_disks``
at once, each keeping the sync's order of writes (pending change id, copy, flush, change id)."""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Dict, List, NamedTuple, Optional, Tuple

from ansible_collections.xms.warm_migration.plugins.module_utils.copy.copier import (
    CopyOptions,
    CopyStats,
    copy_extents,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.copy.errors import CopyError, CopyStopped
from ansible_collections.xms.warm_migration.plugins.module_utils.copy.targets import zero_beyond
from ansible_collections.xms.warm_migration.plugins.module_utils.copy.verify import verify_extents
from ansible_collections.xms.warm_migration.plugins.module_utils.migration import store
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.context import MigrationContext
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.plan import DiskPlan, journal_path
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.projection import epoch
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.record import (
    DiskState,
    MigrationState,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.settings import SyncSettings, copy_options
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack.attach import (
    HeldAttachment,
    close_all,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere.datapath import DiskServer

# How far a disk copy's thread steps back for the control steps of other syncs (lower_copy_priority).
COPY_NICENESS = 10


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


class DiskCopies:
    """The copies of one sync: all from its one snapshot, up to ``parallel_disks`` at once.

    The calling thread starts each disk's nbdkit, records the pending change ids, and afterwards
    stops each nbdkit and advances its change id; one thread per disk only runs the copy engine (and
    the verification), and each volume is held by a thread of its own (Attachments, which detaches
    after the snapshot is gone). So the record's writes are the calling thread's (it waits for them,
    made side by side), and each process whose lifetime is tied to the thread that started it
    (nbdkit's --exit-with-parent, a format layer's qemu-storage-daemon) is started by a thread that
    outlives its use. Each disk keeps the sync's order of writes (pending change id, copy, flush,
    change id), so no disk's record depends on another's. When one disk fails the others are
    stopped: each journals what it had flushed, and the rerun resumes every disk from there. A disk
    with nothing to copy costs no attachment and no nbdkit: only its change id advances."""

    def __init__(
        self, ctx: MigrationContext, snap, snapshot_at: datetime, state, settings: SyncSettings, heartbeat, disks_by_key
    ) -> None:
        self.ctx, self.openstack, self.snap, self.epoch = ctx, ctx.openstack, snap, epoch(snapshot_at)
        self.state, self.settings, self.heartbeat, self.disks_by_key = state, settings, heartbeat, disks_by_key
        self.stop = threading.Event()
        self.finished: queue.Queue[Tuple[int, object]] = queue.Queue()

    def advance_idle(self, disks: List[DiskState]) -> None:
        """Nothing to copy: ``disks`` equal the snapshot already, so their change ids advance at once."""
        self._advance(disks, [self._journal(disk) for disk in disks if disk.pending_change_id])

    def _advance(self, disks: List[DiskState], journals: List[Optional[str]], copied: int = 0) -> None:
        """The volumes hold the snapshot's disks (flushed): their change ids and sizes advance, each records
        that this sync copied ``copied`` bytes of it, and ``journals`` go."""
        for disk in disks:
            disk.change_id, disk.pending_change_id = self.snap.change_ids[disk.disk_key], ""
            disk.capacity = self.snap.capacities[disk.disk_key]
            disk.copied = {**disk.copied, self.epoch: copied}
        store.save_disks(self.openstack, self.state, disks)
        for path in set(journals) - {None}:
            _remove(path)

    def run(self, work: List[Tuple[DiskState, DiskPlan]], attachments: Attachments) -> List[DiskCopy]:
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
                    except Exception as err:  # a disk that cannot start stops the others (raised below)
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
                    if waiting:  # at most parallel_disks volumes held at once: this one's place goes to the next
                        attachments.release(done[-1].disk)
                except Exception as err:  # a disk's failure stops the others; the first real failure is raised below
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

    def _start(self, batch, attachments: Attachments, options: CopyOptions, active: Dict[int, _Active]) -> None:
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
                    self.ctx.vsphere, self.ctx.vm, self.snap, self.disks_by_key[disk.disk_key],
                    vddk_libdir=self.settings.vddk_libdir, transports=self.settings.vddk_transports,
                    reader=self.settings.reader, nfs_mounts=self.settings.nfs_mounts,
                    state_dir=self.settings.state_dir,
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
            if plan.kind != "incremental" or self.snap.capacities[disk.disk_key] > disk.capacity:
                zero_beyond(device, self.snap.capacities[disk.disk_key])  # the volume's whole-GiB tail
            ended = time.monotonic()
            if self.settings.verify:
                verify_extents(uri, device, plan.extents).raise_for_mismatch()
            self.finished.put((disk.disk_key, DiskCopy(disk, plan, stats, ended)))
        except BaseException as err:  # handed to the calling thread, which raises it
            self.finished.put((disk.disk_key, err))

    def _end(self, running: _Active, result) -> DiskCopy:
        """Stop the source; after a copy that returned (so flushed), advance the change id. The volume
        stays attached until the snapshot is gone (see Attachments)."""
        disk, plan, stale, server = running.started
        running.thread.join()
        try:
            server.close()
        finally:
            if isinstance(result, BaseException):
                raise _naming(disk, result)
        self._advance([disk], [running.journal, stale], result.stats.bytes_read)
        self.heartbeat.disk_done(disk.disk_key, plan.bytes)
        return result

    def _journal(self, disk: DiskState) -> str:
        return journal_path(self.settings.state_dir, self.state.migration_id, disk)


class Attachments:
    """The sync's volumes attached to this host, by disk key; all detached on the way out.

    Attaching and detaching cost Cinder seconds per volume (more under a wave's load), and the
    snapshot need not live through them: a disk the record says is copied whole (a seed, a forced
    or a needed full copy) is attached before the snapshot is taken, any other once its plan says
    it has something to copy, and the sync leaves them attached until the snapshot is removed -
    except that no more than ``parallel_disks`` are held at once: with more disks waiting, a copied
    disk's volume detaches when its copy ends. The volumes of one call attach side by side, and all
    detach side by side."""

    def __init__(self, openstack, settings: SyncSettings) -> None:
        self.openstack, self.settings = openstack, settings
        self.held: Dict[int, HeldAttachment] = {}

    def __enter__(self) -> Attachments:
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


def copied_whole(disk: DiskState, state: MigrationState, settings: SyncSettings) -> bool:
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
