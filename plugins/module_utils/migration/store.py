"""Reading and writing the migration record through the OpenStack adapter.

The only place that knows the record lives in volume metadata; the lifecycle
steps deal in :class:`MigrationState` only.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from ansible_collections.xms.warm_migration.plugins.module_utils.common.side_by_side import side_by_side
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.errors import (
    MalformedRecordError,
    MigrationNotFoundError,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.projection import VALUE_LIMIT
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.record import DiskState, MigrationState
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack import volumes as os_volumes


@dataclass
class Malformed:
    """Volumes that carry an ``xms_`` record this collection cannot use: reported, never counted."""

    migration_id: str
    volume_ids: List[str]
    reason: str

    def as_dict(self) -> Dict[str, object]:
        return {"migration_id": self.migration_id, "volume_ids": self.volume_ids, "reason": self.reason}


def _state_of(migration_id: str, volumes) -> Tuple[Optional[MigrationState], List[Malformed]]:
    """The migration from its volumes, and what was wrong with any of them.

    A volume whose record names another volume (its metadata was copied from one) is no disk of
    this migration; two volumes claiming one disk, or a record that does not parse, make the
    migration unreadable: it is reported, the others are still listed."""
    genuine = [v for v in volumes if not v.is_copy]
    copies = [v for v in volumes if v.is_copy]
    problems = [
        Malformed(migration_id, [v.id], f"its record was copied from volume {v.record.get('volume_id')}")
        for v in copies
    ]
    keys = [v.record.get("disk_key") for v in genuine]
    claimed_twice = sorted({k for k in keys if keys.count(k) > 1}, key=str)
    if claimed_twice:
        ids = [v.id for v in genuine if v.record.get("disk_key") in claimed_twice]
        problems.append(
            Malformed(migration_id, ids, f"several volumes claim disk(s) {', '.join(map(str, claimed_twice))}")
        )
        return None, problems
    if not genuine:
        return None, problems
    try:
        return MigrationState.from_volumes([(v.id, v.record) for v in genuine]), problems
    except (KeyError, ValueError, TypeError, OverflowError) as err:
        problems.append(Malformed(migration_id, [v.id for v in genuine], f"its record does not parse ({err})"))
        return None, problems


def load(client, migration_id: str) -> MigrationState:
    """The state of ``migration_id`` from its volumes, or MigrationNotFoundError / MalformedRecordError."""
    found = os_volumes.find_volumes(client, migration_id)
    if not found:
        raise MigrationNotFoundError(
            f"no volume in the target project carries a record of migration {migration_id}",
            hint="Run warm_migration_init for this VM first (or check cloud/project)",
        )
    state, problems = _state_of(migration_id, found)
    if state is None:
        raise MalformedRecordError(
            f"the record of migration {migration_id} is unusable: "
            + "; ".join(f"volume(s) {', '.join(p.volume_ids)}: {p.reason}" for p in problems),
            hint="Remove the xms_ metadata a person or tool added by hand, or the volume that copied it",
        )
    return state


def list_all(client) -> Tuple[Dict[str, MigrationState], List[Malformed]]:
    """Every migration whose volumes are in the target project, and the volumes whose record is unusable."""
    states: Dict[str, MigrationState] = {}
    malformed: List[Malformed] = []
    for mid, vols in os_volumes.list_migrations(client).items():
        state, problems = _state_of(mid, vols)
        malformed.extend(problems)
        if state is not None:
            states[mid] = state
    return states, malformed


# One writer at a time within a process: the owner's thread and its heartbeat timer share the state.
_WRITES = threading.RLock()


def _write(client, writes: List[Tuple[str, Dict[str, str]]]) -> None:
    """Merge each ``(volume id, fields)`` into that volume's record, the volumes side by side: each
    write is a round trip to Cinder, and a crash between them leaves a subset written either way
    (the newest revision wins on load).

    Every encoder keeps its value within VALUE_LIMIT; one that did not is a bug, stopped here before
    any volume is written (Cinder would refuse the write part-way, after the work it records)."""
    for _volume_id, fields in writes:
        over = {k: len(v) for k, v in fields.items() if len(v) > VALUE_LIMIT}
        if over:
            raise ValueError(f"record values over {VALUE_LIMIT} characters: {over}")
    side_by_side(lambda write: os_volumes.update_record(client, *write), writes)


def save_common(client, state: MigrationState) -> None:
    """Write the run fields (all but identity and the operator's) to every volume, with a new revision.

    Only the holder of the migration (a sync, a cutover, a rollback) calls this; it never writes
    ``paused`` or ``cadence``, which belong to the operator."""
    with _WRITES:
        state.revision += 1
        fields = state.run_fields()
        _write(client, [(disk.volume_id, fields) for disk in state.disks])


def save_heartbeat(client, state: MigrationState) -> None:
    """Refresh who runs and how far it got (no new revision: the copies stay comparable)."""
    with _WRITES:
        fields = state.heartbeat_fields()
        _write(client, [(disk.volume_id, fields) for disk in state.disks])


def save_operator(client, state: MigrationState) -> None:
    """Write the operator's fields (pause, cadence) to every volume, after the newest copy of them."""
    with _WRITES:
        state.operator_revision = load(client, state.migration_id).operator_revision + 1
        fields = state.operator_fields()
        _write(client, [(disk.volume_id, fields) for disk in state.disks])


def save_test(client, state: MigrationState) -> None:
    """Write the last test migration (``test``) to every volume; only migration_test calls this.

    No revision: a sync or cutover may hold the migration meanwhile, and never writes this field."""
    with _WRITES:
        fields = state.test_fields()
        _write(client, [(disk.volume_id, fields) for disk in state.disks])


def save_disks(client, state: MigrationState, disks: List[DiskState]) -> None:
    """Write each of ``disks``' own fields (its change ids) to its volume."""
    with _WRITES:
        _write(client, [(disk.volume_id, state.disk_fields(disk)) for disk in disks])
