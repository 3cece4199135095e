"""Reading and writing the migration record through the OpenStack adapter.

The only place that knows the record lives in volume metadata; the lifecycle
steps deal in :class:`MigrationState` only.
"""

from __future__ import annotations

from typing import Dict

from ansible_collections.xms.warm_migration.plugins.module_utils.migration.errors import MigrationNotFoundError
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.record import DiskState, MigrationState
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack import volumes as os_volumes


def load(client, migration_id: str) -> MigrationState:
    """The state of ``migration_id`` from its volumes, or MigrationNotFoundError."""
    found = os_volumes.find_volumes(client, migration_id)
    if not found:
        raise MigrationNotFoundError(
            f"no volume in the target project carries a record of migration {migration_id}",
            hint="Run warm_migration_init for this VM first (or check cloud/project)",
        )
    return MigrationState.from_volumes([(v.id, v.record) for v in found])


def list_all(client) -> Dict[str, MigrationState]:
    """Every migration whose volumes are in the target project."""
    return {
        mid: MigrationState.from_volumes([(v.id, v.record) for v in vols])
        for mid, vols in os_volumes.list_migrations(client).items()
    }


def save_common(client, state: MigrationState) -> None:
    """Write the migration-wide fields to every volume, with a new revision."""
    state.revision += 1
    fields = state.common_fields()
    for disk in state.disks:
        os_volumes.update_record(client, disk.volume_id, fields)


def save_disk(client, state: MigrationState, disk: DiskState) -> None:
    """Write one disk's own fields (its change id) to its volume."""
    os_volumes.update_record(client, disk.volume_id, state.disk_fields(disk))
