"""Start a migration: preflight both sides, enable CBT, create one volume per disk.

Nothing is created unless every preflight check passes, and what this step
creates in a run that then fails is deleted again before the error is
reported: a failed initialize leaves no half-created migration behind. A rerun
adopts the volumes that exist (found by their record, never by name) and
reports ``changed: false`` when there is nothing left to do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Dict, List, Mapping, Optional

from ansible_collections.xms.warm_migration.plugins.module_utils.migration import store
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.context import MigrationContext
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.errors import PhaseError, PreflightError
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.ownership import ensure_free
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.record import (
    CADENCES,
    DiskState,
    MigrationState,
    Phase,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack import preflight as os_preflight
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack import volumes as os_volumes
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere import cbt as vs_cbt
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere import inventory as vs_inventory
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere import versions as vs_versions
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere.datapath import STATE_DIR, Reader, nfs_files
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere.errors import DataPathError


@dataclass
class NetworkMapping:
    """Where the NICs on one source network go in the target cloud."""

    source: str
    network: str
    subnet: Optional[str] = None


@dataclass
class TargetSettings:
    """The target of a migration, as the operator's inventory describes it."""

    instance_name: Optional[str] = None  # default: the source VM's name
    flavor: Optional[str] = None
    volume_type: Optional[str] = None
    disk_volume_types: Dict[str, str] = field(default_factory=dict)  # disk label or key -> type
    availability_zone: Optional[str] = None  # compute AZ of the instance
    volume_availability_zone: Optional[str] = None  # defaults to availability_zone
    network_map: List[NetworkMapping] = field(default_factory=list)
    fixed_ips: Dict[str, str] = field(default_factory=dict)  # source MAC -> fixed IP
    cadence: str = "manual"


def volume_type_for(disk, target: TargetSettings) -> Optional[str]:
    """The per-disk map wins (by label, then key), then the migration's volume type."""
    return target.disk_volume_types.get(disk.label) or target.disk_volume_types.get(str(disk.key)) or target.volume_type


def nic_targets(inv, target: TargetSettings):
    """Each source NIC with its target network, or PreflightError naming the unmapped source network."""
    by_source = {m.source: m for m in target.network_map}
    pairs = []
    for nic in inv.nics:
        mapping = by_source.get(nic.network)
        if mapping is None:
            raise PreflightError(
                f"NIC {nic.mac} of VM '{inv.name}' is on source network '{nic.network}', not mapped by network_map",
                parameter="network_map",
                hint=f"Add an entry with source: '{nic.network}'",
            )
        pairs.append((nic, mapping))
    return pairs


@dataclass
class InitOutcome:
    changed: bool
    migration_id: str
    checks: List[Dict[str, object]]
    warnings: List[str]
    cbt_enabled_now: bool
    state: Optional[MigrationState]
    volumes_planned: List[Dict[str, object]]


class RemovedDisks(str, Enum):
    """What a rerun does with the volume of a disk that left the source VM after the migration started."""

    FAIL = "fail"  # refuse, naming the disks: nothing is dropped without the operator saying so
    KEEP = "keep"  # the volume leaves the migration (its record goes) and stays in the project
    DELETE = "delete"  # the volume is deleted


def initialize(
    ctx: MigrationContext,
    target: TargetSettings,
    *,
    vddk_libdir: str,
    reader: Reader = Reader.AUTO,
    nfs_mounts: Optional[Mapping[str, str]] = None,
    state_dir: str = STATE_DIR,
    removed_disks: RemovedDisks = RemovedDisks.FAIL,
    check_mode: bool = False,
) -> InitOutcome:
    """Preflight, then (unless check mode) enable CBT and ensure the volumes and their record.

    ``vddk_libdir`` is the VDDK of the host that runs this step (the conversion host): its release
    must serve the vCenter's and the ESXi host's, or the first seed would fail after its snapshot.
    With the NFS reader (``reader``, see datapath.uses_nfs) there is no VDDK to check: every disk's
    file must be on an NFS datastore this host has mounted or can mount (``nfs_mounts``, ``state_dir``).

    A rerun on a running migration is how its disk set follows the source: a disk added to the VM
    gets its volume (the next sync seeds it, the others go on incrementally), and a removed disk's
    volume is dropped from the migration as ``removed_disks`` says.
    """
    if target.cadence not in CADENCES:
        raise PreflightError(
            f"unknown cadence '{target.cadence}'", parameter="cadence", hint=f"Use one of {', '.join(CADENCES)}"
        )
    inv, migration_id, openstack = ctx.inventory, ctx.migration_id, ctx.openstack
    warnings: List[str] = []

    verdict = vs_inventory.preflight(inv, vs_inventory.datastore_space(ctx.vsphere, ctx.vm))
    checks: List[Dict[str, object]] = [
        {"name": "source", "ok": verdict.status != "fail", "message": "; ".join(verdict.reasons) or "ok"},
    ]
    if verdict.status == "fail":
        raise PreflightError(
            f"VM '{inv.name}' cannot be migrated warm: {'; '.join(verdict.reasons)}",
            hint="Fix the source VM (see the reasons) and run again",
        )
    checks.append(_reader_check(ctx, vddk_libdir, reader, nfs_mounts or {}, state_dir))
    warnings.extend(verdict.reasons if verdict.status == "warn" else [])

    nics = nic_targets(inv, target)
    volume_az = target.volume_availability_zone or target.availability_zone
    specs = [
        os_volumes.VolumeSpec(
            disk_key=str(disk.key),
            size_bytes=disk.capacity,
            volume_type=volume_type_for(disk, target),
            availability_zone=volume_az,
            name=f"{target.instance_name or inv.name}-disk{index}",
        )
        for index, disk in enumerate(inv.disks)
    ]
    existing = {v.disk_key: v for v in os_volumes.find_volumes(openstack, migration_id)}
    to_create = [s for s in specs if s.disk_key not in existing]
    removed = [v for key, v in sorted(existing.items()) if key not in {s.disk_key for s in specs}]
    if existing and (to_create or removed):
        _check_disk_set_may_change(existing, removed, removed_disks)
    target_checks = os_preflight.preflight(
        openstack,
        volumes=to_create,
        flavor=target.flavor,
        vcpus=inv.vcpus,
        ram_mb=inv.memory_mb,
        availability_zone=target.availability_zone,
        nics=[
            os_preflight.NicTarget(
                mac=nic.mac, network=m.network, subnet=m.subnet, fixed_ip=target.fixed_ips.get(nic.mac)
            )
            for nic, m in nics
        ],
        migration_id=migration_id,
    )
    checks.extend({"name": c.name, "ok": c.ok, "message": c.message} for c in target_checks)
    failed = [c for c in target_checks if not c.ok]
    if failed:
        first = failed[0]
        raise PreflightError(
            "target preflight failed: " + "; ".join(c.message for c in failed),
            parameter=getattr(first, "parameter", None),
            hint="Nothing was created. Fix the input named above and run again",
        )

    planned = [
        {
            "disk_key": s.disk_key,
            "size_bytes": s.size_bytes,
            "volume_type": s.volume_type,
            "availability_zone": s.availability_zone,
            "exists": s.disk_key in existing,
        }
        for s in specs
    ] + [
        {"disk_key": v.disk_key, "volume_id": v.id, "exists": True, "removed_from_source": removed_disks.value}
        for v in removed
    ]
    if check_mode:
        return InitOutcome(
            changed=bool(to_create or removed) or not inv.cbt_enabled,
            migration_id=migration_id,
            checks=checks,
            warnings=warnings,
            cbt_enabled_now=not inv.cbt_enabled,
            state=None,
            volumes_planned=planned,
        )

    cbt_changed = vs_cbt.enable_cbt(ctx.vsphere, ctx.vm)
    for volume in removed:
        if removed_disks is RemovedDisks.DELETE:
            os_volumes.delete_volumes(openstack, [volume.id])
        else:
            os_volumes.release_volume(openstack, volume)
        warnings.append(f"disk {volume.disk_key} left VM '{inv.name}': its volume {volume.id} left the migration"
                        f" ({'deleted' if removed_disks is RemovedDisks.DELETE else 'kept'})")  # fmt: skip
    # New volumes carry the migration-wide fields as they stand (a fresh record for a new migration).
    if len(existing) > len(removed):
        state = store.load(openstack, migration_id)
    else:
        state = MigrationState(migration_id=migration_id, vm_name=inv.name, cadence=target.cadence)
    record = state.common_fields()
    volumes, created = os_volumes.ensure_volumes(
        openstack, migration_id, specs, record, disk_fields=_disk_fields(inv.disks, state, existing)
    )
    state = MigrationState.from_volumes([(v.id, v.record) for v in volumes])
    return InitOutcome(
        changed=bool(created or removed) or cbt_changed,
        migration_id=migration_id,
        checks=checks,
        warnings=warnings,
        cbt_enabled_now=cbt_changed,
        state=state,
        volumes_planned=planned,
    )


def _check_disk_set_may_change(existing, removed, removed_disks: RemovedDisks) -> None:
    """Refuse, before anything changes, a disk-set change the migration cannot take now."""
    state = MigrationState.from_volumes([(v.id, v.record) for v in existing.values()])
    if state.phase in (Phase.CUTOVER, Phase.COMPLETED):
        raise PhaseError(
            f"the disks of VM '{state.vm_name}' changed, but migration {state.migration_id} is in phase"
            f" '{state.phase.value}'",
            hint="Roll the cutover back first (cutover with state: rolled_back)",
        )
    if removed and removed_disks is RemovedDisks.FAIL:
        gone = ", ".join(f"disk {v.disk_key} (volume {v.id})" for v in removed)
        raise PreflightError(
            f"{gone} of migration {state.migration_id} no longer exist on the source VM",
            parameter="removed_disks",
            hint="Say what becomes of their volumes: removed_disks: keep (they leave the migration and stay)"
            " or delete. Nothing was changed",
        )
    ensure_free(state, None)  # no state directory here: any holder of another host holds it


def _disk_fields(disks, state: MigrationState, existing) -> Dict[str, Dict[str, str]]:
    """The record fields of each new disk, by disk key.

    A disk added after the start boots after every disk the migration already had: the boot
    order of the instance-to-be does not change under a running migration."""
    first_new = 1 + max((d.index for d in state.disks), default=-1)
    new = [d for d in disks if str(d.key) not in existing]
    return {
        str(d.key): state.disk_fields(
            DiskState(disk_key=d.key, volume_id="", index=first_new + i, capacity=d.capacity, label=d.label)
        )
        for i, d in enumerate(new)
    }


def _reader_check(ctx: MigrationContext, vddk_libdir: str, reader: Reader, nfs_mounts: Mapping[str, str],
                  state_dir: str) -> Dict[str, object]:  # fmt: skip
    """The reader's check: VDDK's release against vCenter's and the host's, or, for the NFS reader, each
    disk's file reached on its mounted datastore. PreflightError when it fails: nothing was created."""
    files = [disk.backing_file for disk in ctx.inventory.disks]
    try:
        paths = nfs_files(ctx.vsphere, ctx.vm, files, vddk_libdir=vddk_libdir, reader=reader,
                          nfs_mounts=nfs_mounts, state_dir=state_dir)  # fmt: skip
    except DataPathError as err:
        raise PreflightError(err.message, parameter=err.parameter, hint=f"{err.hint}. Nothing was created") from None
    if paths is not None:
        return {"name": "nfs", "ok": True, "message": "the NFS reader reads " + ", ".join(paths)}
    vddk = vs_versions.vddk_verdict(vddk_libdir, vs_versions.read_versions(ctx.vsphere, ctx.vm))
    if not vddk.ok:
        raise PreflightError(vddk.message, parameter="vddk_libdir", hint=f"{vddk.hint}. Nothing was created")
    return {"name": "vddk", "ok": vddk.ok, "message": vddk.message}
