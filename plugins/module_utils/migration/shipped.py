"""A seed carried on disks: the allocated data of one snapshot exported to files, imported into the volumes.

For a VM whose first copy is too large for the link. ``export_seed`` (source site) takes one
snapshot of all disks and writes each disk's allocated areas with the copy engine, at their
offsets, into a sparse raw or qcow2 file in a directory the user names; then a manifest: the
VM, each disk's key, capacity and change id of that snapshot, the areas written and a SHA-256
of their bytes as read back from the file. The snapshot is removed; CBT's change ids stay valid
without it. The manifest is written last and atomically: a directory without one holds an
unfinished export, which a rerun starts over.

``import_seed`` (target site, the migration initialized, the directory carried there) checks the
manifest against the migration, the VM and the files before anything changes, then writes each
file into its volume as a seed would (the data at the same offsets, the rest made zero) and
records the manifest's change ids. The next ``block_sync`` is an incremental of everything the
guest wrote since the export. An import that stops part-way leaves the disks pending on the
export's change ids with their resume journals, so a rerun of the import, or a ``block_sync``
(which then copies what the import had not flushed from a new snapshot, plus the changes), ends
with the volumes equal to the source.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import os
import resource
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional

from ansible_collections.xms.warm_migration.plugins.module_utils.common.errors import WarmMigrationError
from ansible_collections.xms.warm_migration.plugins.module_utils.copy import layer, nbd_source
from ansible_collections.xms.warm_migration.plugins.module_utils.copy.copier import copy_extents
from ansible_collections.xms.warm_migration.plugins.module_utils.copy.extents import (
    Extent,
    merge_extents,
    subtract_extents,
    total_bytes,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.copy.targets import zero_beyond
from ansible_collections.xms.warm_migration.plugins.module_utils.copy.verify import digest_extents
from ansible_collections.xms.warm_migration.plugins.module_utils.migration import ownership, store
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.context import MigrationContext
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.errors import PhaseError
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.lock import host_lock
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.plan import journal_path
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.projection import SyncSample
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.record import (
    MigrationState,
    Phase,
    format_time,
    parse_time,
    utcnow,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.settings import SyncSettings, copy_options
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.sync import (
    SyncOutcome,
    record_sync,
    source_disks,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack import volumes as os_volumes
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack.attach import attach_for_write
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere import cbt as vs_cbt
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere.datapath import open_disk
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere.errors import VSphereError

MANIFEST = "manifest.json"
VERSION = 2  # 2: each digest bound to its migration, disk, change id and capacity; an optional HMAC
FORMATS = ("raw", "qcow2")
# What reading a carried qcow2's header may cost (qemu-img info), as Nova and Glance bound their image
# inspection: a crafted header must not take the conversion host's memory or CPU.
INSPECT_LIMITS = {"address_space": 1 << 30, "cpu_s": 30}


class SeedFileError(WarmMigrationError):
    """A carried seed that cannot be imported: another VM's, another layout, damaged or incomplete."""


@dataclass
class ShippedDisk:
    """One exported disk: where its file is, what it holds, and the CBT point it is a copy of."""

    disk_key: int
    label: str
    capacity: int
    change_id: str
    file: str  # name inside the directory
    extents: List[List[int]]  # [offset, length] of the allocated areas: the only data in the file
    sha256: str  # of binding() and those areas' bytes, in offset order, read back from the file

    @property
    def data(self) -> List[Extent]:
        return [Extent(offset, length) for offset, length in self.extents]


@dataclass
class Manifest:
    """What an export wrote, and what an import checks before it writes anything."""

    migration_id: str
    vm_name: str
    snapshot_at: str  # UTC, ISO 8601: when the export's snapshot was taken
    format: str  # raw | qcow2
    disks: List[ShippedDisk] = field(default_factory=list)
    version: int = VERSION
    hmac: str = ""  # HMAC-SHA256 of the rest, keyed by a secret both sites hold (manifest_key_file); "" unsigned

    def as_dict(self) -> Dict[str, object]:
        return asdict(self)

    def mac(self, key: bytes) -> str:
        """The HMAC of every field but ``hmac`` itself, over a canonical JSON text."""
        fields = {k: v for k, v in self.as_dict().items() if k != "hmac"}
        text = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
        return hmac.new(key, text, hashlib.sha256).hexdigest()


def binding(migration_id: str, disk: ShippedDisk) -> bytes:
    """What a disk's digest covers besides its data: the file is this migration's disk at this CBT point, at this
    size. Entries swapped between disks, or carried to another migration, no longer match their digests."""
    return f"xms-seed-v{VERSION}\n{migration_id}\n{disk.disk_key}\n{disk.change_id}\n{disk.capacity}\n".encode()


@dataclass
class ExportOutcome:
    changed: bool
    manifest: Manifest
    bytes_written: int = 0
    duration_s: float = 0.0
    warnings: List[str] = field(default_factory=list)


def read_manifest(directory: str) -> Manifest:
    """The directory's manifest, or a SeedFileError naming ``directory`` and what is wrong."""
    path = os.path.join(directory, MANIFEST)
    try:
        with open(path) as handle:
            data = json.load(handle)
        disks = [ShippedDisk(**disk) for disk in data.pop("disks")]
        manifest = Manifest(disks=disks, **data)
        parse_time(manifest.snapshot_at)
    except FileNotFoundError:
        raise SeedFileError(
            f"{directory} holds no {MANIFEST}: it is not an export, or the export did not finish",
            parameter="directory",
            hint="Carry the whole directory that seed_export wrote; an unfinished export is started over by a rerun",
        ) from None
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as err:
        raise SeedFileError(
            f"{path} cannot be read as a seed manifest: {err}",
            parameter="directory",
            hint="Carry the directory again from the source site (the manifest is written by seed_export only)",
        ) from None
    if manifest.version != VERSION or manifest.format not in FORMATS:
        raise SeedFileError(
            f"{path} is a manifest of version {manifest.version}, format '{manifest.format}'",
            parameter="directory",
            hint=f"This collection reads version {VERSION} in raw or qcow2; export again with it",
        )
    return manifest


# --- export (source site) ---------------------------------------------------------------------------------
def export_seed(
    ctx: MigrationContext,
    directory: str,
    fmt: str,
    settings: SyncSettings,
    *,
    key: Optional[bytes] = None,
    check_mode: bool = False,
) -> ExportOutcome:
    """Export one snapshot's allocated data of every disk of ``ctx``'s VM to ``directory`` (see the module doc);
    with ``key`` the manifest is signed (HMAC-SHA256).

    Holds the host lock of the VM's migration, so a sync of it on this host waits its turn (both
    take snapshots)."""
    inv, migration_id = ctx.inventory, ctx.migration_id
    if os.path.exists(os.path.join(directory, MANIFEST)):
        manifest = read_manifest(directory)
        if manifest.migration_id != migration_id:
            raise SeedFileError(
                f"{directory} already holds the export of VM '{manifest.vm_name}' ({manifest.migration_id})",
                parameter="directory",
                hint="Name an empty directory for each VM",
            )
        return ExportOutcome(changed=False, manifest=manifest)
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise SeedFileError(f"{directory} exists and is not a directory", parameter="directory",
                            hint="Name a directory (it is created when missing)")  # fmt: skip
    planned = Manifest(migration_id=migration_id, vm_name=inv.name, snapshot_at="", format=fmt)
    if check_mode:
        return ExportOutcome(changed=True, manifest=planned)
    with host_lock(settings.state_dir, migration_id):
        return _export_locked(ctx, directory, planned, settings, key)


def _export_locked(
    ctx: MigrationContext, directory: str, planned: Manifest, settings: SyncSettings, key: Optional[bytes]
) -> ExportOutcome:
    vsphere, vm, inv = ctx.vsphere, ctx.vm, ctx.inventory
    fmt = planned.format
    outcome = ExportOutcome(changed=True, manifest=planned)
    started = time.monotonic()
    os.makedirs(directory, mode=0o700, exist_ok=True)
    if not inv.cbt_enabled or not all(d.change_id for d in inv.disks):
        vs_cbt.enable_cbt(vsphere, vm)
        outcome.warnings.append(f"CBT was off on VM '{inv.name}': switched it on for the export")
    vs_cbt.remove_orphan_snapshots(vsphere, vm)
    planned.snapshot_at = format_time(utcnow())
    with vs_cbt.sync_snapshot(vsphere, vm, purpose="seed export") as snap:
        for source in inv.disks:
            change_id = snap.change_ids.get(source.key)
            if not change_id:
                raise VSphereError(
                    f"disk {source.label or source.key} of VM '{inv.name}' has no change id in the export's"
                    " snapshot: CBT is not active on it",
                    hint="Check that CBT is enabled on the VM (ctkEnabled) and that the disk is not independent",
                )
            capacity = snap.capacities[source.key]
            allocated = vs_cbt.changed_extents(vsphere, vm, snap, source.key, None, capacity)
            name = f"disk-{source.key}.{fmt}"
            path = os.path.join(directory, name)
            _create(path, fmt, capacity)
            with (
                open_disk(
                    vsphere,
                    vm,
                    snap,
                    source,
                    vddk_libdir=settings.vddk_libdir,
                    transports=settings.vddk_transports,
                    reader=settings.reader,
                    nfs_mounts=settings.nfs_mounts,
                    state_dir=settings.state_dir,
                ) as uri,
                layer.plain_view(path, layer.VolumeFormat(fmt)) as dest,
            ):
                stats = copy_extents(uri, dest, allocated, size=capacity, options=copy_options(settings))
                shipped = ShippedDisk(
                    disk_key=source.key, label=source.label, capacity=capacity, change_id=change_id, file=name,
                    extents=[[e.offset, e.length] for e in allocated], sha256="",
                )  # fmt: skip
                shipped.sha256 = digest_extents(dest, allocated, binding(planned.migration_id, shipped))
            outcome.bytes_written += stats.bytes_written
            planned.disks.append(shipped)
    if key is not None:
        planned.hmac = planned.mac(key)
    _write_manifest(directory, planned)
    outcome.duration_s = time.monotonic() - started
    return outcome


def _create(path: str, fmt: str, capacity: int) -> None:
    """A new, empty (all-zero, sparse) image of ``capacity`` bytes; an unfinished export's file is replaced."""
    if os.path.exists(path):
        os.unlink(path)
    if fmt == "raw":
        with open(path, "wb") as handle:
            handle.truncate(capacity)
        return
    qemu_img = shutil.which("qemu-img")
    if qemu_img is None:
        raise SeedFileError("qemu-img is not installed on this host", parameter="format",
                            hint="Install qemu-utils, or export in format raw")  # fmt: skip
    done = subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", path, str(capacity)],
                          capture_output=True, text=True, check=False)  # fmt: skip
    if done.returncode:
        raise SeedFileError(f"qemu-img cannot create {path}: {done.stderr.strip()}", parameter="directory",
                            hint="Check the directory's free space and rights")  # fmt: skip


def _write_manifest(directory: str, manifest: Manifest) -> None:
    """Written last, synced, renamed into place: a manifest exists only for a finished export."""
    tmp = os.path.join(directory, f".{MANIFEST}.tmp")
    with open(tmp, "w") as handle:
        json.dump(manifest.as_dict(), handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, os.path.join(directory, MANIFEST))
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- import (target site) ---------------------------------------------------------------------------------
def import_seed(
    ctx: MigrationContext,
    directory: str,
    settings: SyncSettings,
    *,
    key: Optional[bytes] = None,
    check_mode: bool = False,
) -> SyncOutcome:
    """Write a carried export into the migration's volumes and record it as the seed (see the module doc);
    with ``key`` the manifest must carry the HMAC the export made with the same key."""
    openstack, migration_id = ctx.openstack, ctx.migration_id
    manifest = read_manifest(directory)
    state = store.load(openstack, migration_id)
    if _already_imported(state, manifest):
        return SyncOutcome(changed=False, kind="skipped", reason="imported", state=state)
    _check_signature(manifest, key, directory)
    _check(ctx, state, manifest, directory)
    if check_mode:
        return SyncOutcome(changed=True, kind="seed", state=state,
                           bytes_copied=sum(total_bytes(d.data) for d in manifest.disks))  # fmt: skip
    ownership.ensure_free(state, ownership.Observations(settings.state_dir))
    check = functools.partial(_check_record, manifest=manifest, directory=directory)
    with ownership.hold(openstack, migration_id, settings.state_dir, check=check, phase=Phase.SEEDING) as held:
        outcome = _import_held(openstack, held, manifest, directory, settings)
    outcome.warnings.extend(held.heartbeat.warnings())
    return outcome


def _already_imported(state: MigrationState, manifest: Manifest) -> bool:
    ids = {d.disk_key: d.change_id for d in manifest.disks}
    return state.seeded and all(ids.get(d.disk_key) == d.change_id for d in state.disks)


def _check(ctx: MigrationContext, state: MigrationState, manifest: Manifest, directory: str) -> None:
    """Everything the import relies on, checked read-only: any failure leaves the volumes and record as they are."""
    _check_record(state, manifest, directory)
    _check_disks(ctx.inventory, state, manifest, directory)


def _check_record(state: MigrationState, manifest: Manifest, directory: str) -> None:
    """What the record must say for the import: checked first, and again under the hold (it may have moved
    during the checksum pass, which reads every carried byte)."""
    if manifest.migration_id != state.migration_id:
        raise SeedFileError(
            f"{directory} holds the export of VM '{manifest.vm_name}' ({manifest.migration_id}),"
            f" not of migration {state.migration_id}",
            parameter="directory",
            hint="Import each VM's directory into its own migration",
        )
    if state.phase in (Phase.CUTOVER, Phase.COMPLETED) or state.seeded:
        raise PhaseError(
            f"migration {state.migration_id} is {'seeded already' if state.seeded else state.phase.value}:"
            " a carried seed only seeds a new migration",
            hint="Its next block_sync is an incremental; nothing needs importing",
        )
    shipped = {d.disk_key: d for d in manifest.disks}
    if set(shipped) != {d.disk_key for d in state.disks}:
        raise SeedFileError(
            f"the export holds disks {sorted(shipped)}, the migration has {sorted(d.disk_key for d in state.disks)}",
            parameter="directory",
            hint="Export again: the VM's disks changed since the export",
        )


def _check_disks(inv, state: MigrationState, manifest: Manifest, directory: str) -> None:
    """Each carried disk against the VM's disk now and its file (sizes, CBT epoch, checksum)."""
    current = source_disks(inv, state)  # the VM's disks still those of the migration
    shipped = {d.disk_key: d for d in manifest.disks}
    for disk in state.disks:
        carried = shipped[disk.disk_key]
        name = disk.label or disk.disk_key
        if carried.capacity < disk.capacity:
            raise SeedFileError(
                f"disk {name} was {carried.capacity} bytes at the export and is {disk.capacity} in the migration",
                parameter="directory",
                hint="Export again: the export is older than the migration's disk layout",
            )
        if not vs_cbt.same_epoch(carried.change_id, current[disk.disk_key].change_id):
            raise SeedFileError(
                f"CBT of disk {name} was reset since the export (change id {carried.change_id}, now"
                f" {current[disk.disk_key].change_id or 'none'}): what the guest wrote since cannot be known",
                parameter="directory",
                hint="The carried seed cannot be used; seed over the network with block_sync (a full copy)",
            )
        _check_file(directory, manifest.format, carried, name, state.migration_id)


def _check_signature(manifest: Manifest, key: Optional[bytes], directory: str) -> None:
    """With a key, only a manifest it signed; a signed manifest only with its key (checked before anything else)."""
    if key is None and manifest.hmac:
        raise SeedFileError(
            f"the manifest in {directory} is signed, and no key was given to check it",
            parameter="manifest_key_file",
            hint="Name the key file the export was signed with",
        )
    if key is not None and not hmac.compare_digest(manifest.hmac, manifest.mac(key)):
        raise SeedFileError(
            f"the manifest in {directory} is {'not signed' if not manifest.hmac else 'not signed with this key'}:"
            " it is not the export the source site made, or it was changed since",
            parameter="manifest_key_file",
            hint="Carry the directory again from the source site, and use the key file both sites hold",
        )


def _check_file(directory: str, fmt: str, carried: ShippedDisk, name, migration_id: str) -> None:
    path = os.path.join(directory, carried.file)
    if os.path.basename(carried.file) != carried.file or not os.path.isfile(path):
        raise SeedFileError(f"the file {carried.file} of disk {name} is missing from {directory}",
                            parameter="directory", hint="Carry the whole directory seed_export wrote")  # fmt: skip
    if fmt == "qcow2":
        _inspect_qcow2(path, name)
    with layer.plain_view(path, layer.VolumeFormat(fmt)) as view:
        size = _size(view)
        if size < carried.capacity:
            raise SeedFileError(
                f"{path} holds {size} bytes, disk {name} {carried.capacity}: the file was cut short",
                parameter="directory",
                hint="Copy the file again from the source site (a copy that ran out of space is shorter)",
            )
        if digest_extents(view, carried.data, binding(migration_id, carried)) != carried.sha256:
            raise SeedFileError(
                f"{path} does not hold what was exported for disk {name}: its checksum differs",
                parameter="directory",
                hint="Copy the file again from the source site; the carried copy is damaged",
            )


def _inspect_qcow2(path: str, name) -> None:
    """A carried qcow2 is one plain image: no backing file (it would read another file of this host into the
    volume), no external data file; its header read by qemu-img under memory and CPU limits."""

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (INSPECT_LIMITS["address_space"],) * 2)
        resource.setrlimit(resource.RLIMIT_CPU, (INSPECT_LIMITS["cpu_s"],) * 2)

    argv = [shutil.which("qemu-img") or "qemu-img", "info", "-f", "qcow2", "--output=json", path]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60,
                              preexec_fn=limited)  # pylint: disable=subprocess-popen-preexec-fn  # fmt: skip
        info = json.loads(done.stdout) if done.returncode == 0 else None
    except (OSError, ValueError, subprocess.TimeoutExpired):
        info = None
    if not isinstance(info, dict):
        raise SeedFileError(f"{path} (disk {name}) cannot be read as a qcow2 image within the limits",
                            parameter="directory", hint="Copy the file again from the source site")  # fmt: skip
    data_file = (info.get("format-specific") or {}).get("data", {}).get("data-file")
    if info.get("backing-filename") or info.get("full-backing-filename") or data_file:
        raise SeedFileError(
            f"{path} (disk {name}) refers to another file ({info.get('backing-filename') or data_file}):"
            " seed_export writes self-contained images only",
            parameter="directory",
            hint="Carry the directory seed_export wrote, unchanged",
        )


def _remove_journal(path: str) -> None:
    if os.path.exists(path):
        os.unlink(path)


def _size(view: str) -> int:
    if nbd_source.is_nbd_uri(view):
        handle = nbd_source.connect(view, parameter="directory")
        try:
            return handle.get_size()
        finally:
            handle.shutdown()
    return os.path.getsize(view)


def _import_held(openstack, held: ownership.Held, manifest: Manifest, directory: str, settings: SyncSettings):
    """The writes, in the sync's order: pending change id, copy, flush, change id; the common fields last."""
    state, heartbeat = held.state, held.heartbeat
    outcome = SyncOutcome(changed=True, kind="seed", state=state)
    started = time.monotonic()
    shipped = {d.disk_key: d for d in manifest.disks}
    copied = 0
    copy_s = 0.0
    for disk in state.disks:
        os_volumes.extend_volume(openstack, disk.volume_id, shipped[disk.disk_key].capacity)
    heartbeat.expect(sum(d.capacity for d in manifest.disks))
    for disk in state.disks:
        carried = shipped[disk.disk_key]
        disk.pending_change_id = carried.change_id
        store.save_disks(openstack, state, [disk])
        jpath = journal_path(settings.state_dir, state.migration_id, disk)
        os.makedirs(os.path.dirname(jpath), mode=0o700, exist_ok=True)
        zeros = subtract_extents([Extent(0, carried.capacity)], merge_extents(carried.data))
        with (
            layer.nbd_view(os.path.join(directory, carried.file), layer.VolumeFormat(manifest.format)) as uri,
            attach_for_write(
                openstack, disk.volume_id, mode=settings.attach_mode, server_id=settings.conversion_server
            ) as device,
        ):
            stats = copy_extents(
                uri, device, carried.data + zeros, size=carried.capacity, journal_path=jpath,
                options=copy_options(settings), progress=heartbeat.disk(disk.disk_key),
                source_zeros=zeros,
            )  # fmt: skip
            zero_beyond(device, carried.capacity)  # the volume's whole-GiB tail, past the disk
            # What was copied, not what was checked: the file may have changed since. Read back from the volume.
            if digest_extents(device, carried.data, binding(state.migration_id, carried)) != carried.sha256:
                _remove_journal(jpath)  # the disk stays pending without a journal: the next run rewrites it whole
                raise SeedFileError(
                    f"disk {disk.label or disk.disk_key}: what was copied from {carried.file} is not what was"
                    " exported (the file changed after it was checked); its change id was not recorded",
                    parameter="directory",
                    hint="Carry the directory again from the source site, or seed over the network with block_sync",
                )
        disk.change_id, disk.pending_change_id, disk.capacity = carried.change_id, "", carried.capacity
        store.save_disks(openstack, state, [disk])
        _remove_journal(jpath)
        heartbeat.disk_done(disk.disk_key, carried.capacity)
        copied += stats.bytes_read
        copy_s += stats.elapsed_s
        outcome.disks.append({"disk_key": disk.disk_key, "label": disk.label, "volume_id": disk.volume_id,
                              "kind": "seed", "change_id": disk.change_id, "stats": stats.as_dict()})  # fmt: skip
    outcome.bytes_copied, outcome.duration_s = copied, time.monotonic() - started
    sample = SyncSample(parse_time(manifest.snapshot_at), "seed", copied, outcome.duration_s, copy_s)
    outcome.rate = record_sync(openstack, state, settings.state_dir, sample, bytes_full=copied)
    return outcome
