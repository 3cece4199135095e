"""One Cinder volume per source disk, carrying the migration record in its metadata.

Volumes are found again by their record (``xms_migration_id`` and
``xms_disk_key``), never by name: names are the operator's to change. A
volume takes its full size from the quota at creation, so what a migration
needs is reserved when it is submitted, not when the seed finishes.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from ansible_collections.xms.warm_migration.plugins.module_utils.common.waiter import wait_for
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack.errors import OpenStackError, QuotaError

GiB = 1 << 30
PREFIX = "xms_"


@dataclass
class VolumeSpec:
    """The volume one source disk needs."""

    disk_key: str
    size_bytes: int
    volume_type: Optional[str]
    availability_zone: Optional[str]
    name: str

    @property
    def size_gib(self) -> int:
        """Cinder sizes volumes in whole GiB: round up, never down."""
        return max(1, math.ceil(self.size_bytes / GiB))


@dataclass
class TargetVolume:
    id: str
    name: str
    disk_key: str
    size_bytes: int
    status: str
    bootable: bool
    availability_zone: str
    volume_type: str
    record: Dict[str, str] = field(default_factory=dict)

    @property
    def is_copy(self) -> bool:
        """Its record names another volume: its metadata was copied from a volume of a migration."""
        return self.record.get("volume_id") not in (None, "", self.id)


def prefixed(fields: Dict[str, str]) -> Dict[str, str]:
    return {PREFIX + key: str(value) for key, value in fields.items()}


def _target_volume(volume) -> TargetVolume:
    metadata = volume.metadata or {}
    record = {key[len(PREFIX) :]: value for key, value in metadata.items() if key.startswith(PREFIX)}
    return TargetVolume(
        id=volume.id,
        name=volume.name or "",
        disk_key=record.get("disk_key", ""),
        size_bytes=volume.size * GiB,
        status=volume.status,
        bootable=str(volume.is_bootable).lower() == "true",
        availability_zone=volume.availability_zone or "",
        volume_type=volume.volume_type or "",
        record=record,
    )


def list_migrations(client) -> Dict[str, List[TargetVolume]]:
    """Every migration's volumes in the project, by migration id."""
    found: Dict[str, List[TargetVolume]] = {}
    for volume in client.conn.block_storage.volumes(details=True):
        target = _target_volume(volume)
        if target.record.get("migration_id"):
            found.setdefault(target.record["migration_id"], []).append(target)
    return found


def find_volumes(client, migration_id: str) -> List[TargetVolume]:
    """The volumes of one migration (filtered here: metadata filters differ between Cinder releases).

    A volume whose record names another volume merely carries a copy of that volume's metadata:
    it is no volume of the migration, and nothing here will write, attach or delete it."""
    return [v for v in list_migrations(client).get(migration_id, []) if not v.is_copy]


def update_record(client, volume_id: str, fields: Dict[str, str]) -> None:
    """Merge ``fields`` into the volume's record."""
    client.conn.block_storage.set_volume_metadata(volume_id, **prefixed(fields))


def ensure_volumes(
    client,
    migration_id: str,
    specs: List[VolumeSpec],
    record: Dict[str, str],
    *,
    disk_fields: Dict[str, Dict[str, str]],
    timeout: float = 600,
) -> Tuple[List[TargetVolume], List[str]]:
    """Create the volumes of ``specs`` that do not exist yet; return all of them and the ids created.

    If any creation fails, the volumes created by this call are deleted again
    before the error is raised: no half-created migration is left behind.
    """
    existing = {v.disk_key: v for v in find_volumes(client, migration_id)}
    created: List[str] = []
    try:
        for spec in specs:
            if spec.disk_key in existing:
                continue
            metadata = prefixed({**record, "migration_id": migration_id, **disk_fields[spec.disk_key]})
            volume = client.conn.block_storage.create_volume(
                name=spec.name,
                size=spec.size_gib,
                volume_type=spec.volume_type,
                availability_zone=spec.availability_zone,
                metadata=metadata,
                description=f"xms.warm_migration replica of disk {spec.disk_key} ({migration_id})",
            )
            created.append(volume.id)
            # The record names its own volume: metadata copied onto another volume then gives itself away.
            update_record(client, volume.id, {"volume_id": volume.id})
        for volume_id in created:
            wait_for(
                lambda vid=volume_id: _available(client, vid),
                timeout=timeout,
                what=f"volume {volume_id} to become available",
                hint="Check the cinder-volume service and its back-end",
            )
    except Exception as err:  # any failure: what was created is deleted first, then the error is typed
        delete_volumes(client, created)
        raise _volume_error(err) from None
    return find_volumes(client, migration_id), created


def clone_volumes(client, migration_id: str, volumes: List[TargetVolume], tag: str, timeout: float = 600) -> List[str]:
    """Clone ``volumes`` through Cinder (volume from volume, same type and zone), in their order.

    The clones carry ``tag`` = the migration id and no record: nothing treats them as replicas.
    Cinder only reads the replicas. If any clone fails, the clones made are deleted again."""
    storage = client.conn.block_storage
    created: List[str] = []
    try:
        for volume in volumes:
            clone = storage.create_volume(
                name=f"{volume.name}-test",
                size=max(1, math.ceil(volume.size_bytes / GiB)),
                source_volume_id=volume.id,
                metadata={tag: migration_id},
                description=f"xms.warm_migration test clone of {volume.id} ({migration_id})",
            )
            created.append(clone.id)
        for volume_id in created:
            wait_for(lambda vid=volume_id: _available(client, vid), timeout=timeout,
                     what=f"clone {volume_id} to become available", hint="Check the cinder-volume service")  # fmt: skip
    except Exception as err:  # any failure: what was created is deleted first, then the error is typed
        delete_volumes(client, created)
        raise _volume_error(err) from None
    return created


def find_test_clones(client, tag: str, migration_id: str, replica_ids: List[str]) -> List[str]:
    """Ids of a test migration's clones: tagged ``tag`` = ``migration_id`` and cloned from one of the replicas.

    Cinder copies a volume's metadata into its clones: a volume someone cloned from a test's clone
    carries the tag too, but its source is that clone, not a replica - it is theirs, and never found here."""
    return [
        v.id
        for v in client.conn.block_storage.volumes(details=True)
        if (v.metadata or {}).get(tag) == migration_id and v.source_volume_id in replica_ids
    ]


def snapshots_of(client, volume_ids: List[str]) -> List[str]:
    """Ids of the snapshots of ``volume_ids`` (before a cutover completes, somebody else took them)."""
    return [snap.id for vid in volume_ids for snap in client.conn.block_storage.snapshots(volume_id=vid)]


POST_MIGRATION_TAG = PREFIX + "post_migration_of"


def post_migration_snapshots(client, migration_id: str, volume_ids: List[str], timeout: float = 600) -> List[str]:
    """One snapshot per volume of a validated cutover: the workload owner's rollback point in the cloud.

    Tagged with the migration, so a rerun finds the ones it made instead of taking more. The volumes
    are in use by the running instance (``force``; Cinder's NFS driver asks Nova for the snapshot of an
    attached volume)."""
    storage = client.conn.block_storage
    ids = []
    for volume_id in volume_ids:
        taken = [s for s in storage.snapshots(details=True, volume_id=volume_id)
                 if (s.metadata or {}).get(POST_MIGRATION_TAG) == migration_id and s.status != "error"]  # fmt: skip
        snap = taken[0] if taken else storage.create_snapshot(
            volume_id=volume_id, name=f"xms-{migration_id}-post-migration", force=True,
            metadata={POST_MIGRATION_TAG: migration_id},
            description=f"xms.warm_migration: the volume as its validated cutover left it ({migration_id})",
        )  # fmt: skip
        ids.append(snap.id)
    for snap_id in ids:
        wait_for(lambda sid=snap_id: _snapshot_ready(client, sid), timeout=timeout,
                 what=f"snapshot {snap_id} to become available", hint="Check the cinder-volume service")  # fmt: skip
    return ids


def _snapshot_ready(client, snapshot_id: str) -> bool:
    snap = client.conn.block_storage.get_snapshot(snapshot_id)
    if snap.status == "error":
        raise OpenStackError(
            f"snapshot {snapshot_id} went to error",
            parameter="post_migration_snapshot",
            hint="See cinder-volume's log; delete the snapshot and run the cutover again, or set"
            " post_migration_snapshot: false",
        )
    return snap.status == "available"


def extend_volume(client, volume_id: str, size_bytes: int, timeout: float = 600) -> bool:
    """Grow the volume to hold ``size_bytes`` (whole GiB, rounded up); False when it already does.

    A source disk grown during the warm phase needs it before its new area is copied. Cinder
    checks quota and policy at the call (nothing changes when it refuses); a back-end that
    fails the extension leaves the volume in ``error_extending``, which only an administrator
    can reset: both are reported with the volume, its type and what to do.
    """
    storage = client.conn.block_storage
    volume = storage.get_volume(volume_id)
    need = max(1, math.ceil(size_bytes / GiB))
    if volume.size >= need:
        return False
    try:
        storage.extend_volume(volume, need)
    except Exception as err:  # refused or failed: said with the volume's type
        text = str(getattr(err, "details", None) or err)
        raise OpenStackError(
            f"volume {volume_id} (type {volume.volume_type}) cannot be extended from {volume.size} to {need} GiB:"
            f" {text}",
            hint="The source disk grew: raise the project's quota, or extend the volume by hand"
            " (openstack volume set --size), then sync again; nothing was copied",
        ) from None

    def extended() -> bool:
        current = storage.get_volume(volume_id)
        if current.status == "error_extending":
            raise OpenStackError(
                f"the back-end of volume type {volume.volume_type} failed to extend volume {volume_id} to {need} GiB",
                hint="See cinder-volume's log; an administrator resets the volume's state"
                " (cinder reset-state --state available), then sync again",
            )
        return current.status == "available" and current.size >= need

    wait_for(extended, timeout=timeout, what=f"volume {volume_id} to be extended to {need} GiB")
    return True


def _available(client, volume_id: str) -> bool:
    volume = client.conn.block_storage.get_volume(volume_id)
    if volume.status == "error":
        raise OpenStackError(
            f"volume {volume_id} went to status 'error'",
            hint="See cinder-volume's log; often the back-end is full or the zone has no such back-end",
        )
    return volume.status == "available"


def _volume_error(err: Exception) -> OpenStackError:
    """What a failed creation says, once what it created is deleted again."""
    if isinstance(err, OpenStackError):  # typed already (faults.py, a waiter): it says the rest
        err.hint = (err.hint + ". " if err.hint else "") + "Nothing was left behind"
        return err
    text = str(getattr(err, "details", None) or err)
    if "quota" in text.lower() or "VolumeLimitExceeded" in text:
        return QuotaError(
            f"the project's volume quota is exhausted: {text}",
            hint="Raise the quota or free volumes; nothing was left behind",
        )
    return OpenStackError(f"creating a volume failed: {text}", hint="Nothing was left behind")


def delete_volumes(client, volume_ids: List[str], timeout: float = 300, *, cascade: bool = True) -> None:
    """Delete volumes and wait until they are gone (rollback and cleanup).

    A volume still being created cannot be deleted yet, so every one is first
    awaited until it settles (available or error); an attached one never
    would, so it is refused then, before any of them is deleted. With ``cascade``
    snapshots somebody took of a replica go with it: they are copies of a
    replica, never the source's only copy, and would otherwise block the delete.
    """
    storage = client.conn.block_storage
    deadline = time.monotonic() + timeout
    for volume_id in volume_ids:
        wait_for(
            lambda vid=volume_id: _settled(storage, vid),
            timeout=max(1.0, deadline - time.monotonic()),
            what=f"volume {volume_id} to settle before it is deleted",
        )
    for volume_id in volume_ids:
        storage.delete_volume(volume_id, ignore_missing=True, cascade=cascade)
    for volume_id in volume_ids:
        wait_for(
            lambda vid=volume_id: storage.find_volume(vid, ignore_missing=True) is None,
            timeout=max(1.0, deadline - time.monotonic()),
            what=f"volume {volume_id} to be deleted",
        )


def _settled(storage, volume_id: str) -> bool:
    """True once the volume can be deleted; an attached one never gets there by waiting, so it is refused."""
    volume = storage.find_volume(volume_id, ignore_missing=True)
    if volume is not None and volume.status == "in-use":
        held = ", ".join(_attachment_text(a) for a in volume.attachments or []) or "in-use"
        raise OpenStackError(
            f"volume {volume_id} is attached ({held}) and cannot be deleted",
            hint="An attachment to a host without a server is one a killed sync, cutover or test left on that"
            " conversion host: a rerun there releases it, as does 'openstack volume attachment delete <id>'."
            " One to a server goes with a detach from that server",
        )
    return volume is None or volume.status in ("available", "error", "error_restoring", "error_extending")


def _attachment_text(attachment: dict) -> str:
    if attachment.get("server_id"):
        holder = f"to server {attachment['server_id']}"
    elif attachment.get("host_name"):
        holder = f"to host {attachment['host_name']}"
    else:
        holder = "to no server"  # a host attachment: Cinder does not always name the host
    return f"attachment {attachment.get('attachment_id')} {holder}"


def release_volume(client, volume: TargetVolume) -> None:
    """Take a volume out of its migration, keeping it: its record (the ``xms_`` metadata) goes."""
    client.conn.block_storage.delete_volume_metadata(volume.id, keys=[PREFIX + key for key in volume.record])
