"""Reading migrations back for reports, and the pause/cadence switches.

Only the target cloud is needed: the record on the volumes is the durable state.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from ansible_collections.xms.warm_migration.plugins.module_utils.migration import store
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.errors import MigrationNotFoundError
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.record import CADENCES, MigrationState


def select(
    openstack, *, migration_id: Optional[str] = None, vm_uuid: Optional[str] = None, vm_name: Optional[str] = None
) -> Tuple[List[MigrationState], List[store.Malformed]]:
    """The migrations asked for (one by id or VM UUID, those of a VM name, or all of the project), and the
    volumes whose record could not be used: one hand-made volume never hides every other migration."""
    if vm_uuid:
        migration_id = f"vm-{vm_uuid}"
    if migration_id:
        return [store.load(openstack, migration_id)], []
    states, malformed = store.list_all(openstack)
    found = sorted(states.values(), key=lambda s: s.vm_name)
    if vm_name:
        found = [s for s in found if s.vm_name == vm_name]
        if not found:
            raise MigrationNotFoundError(
                f"no migration of a VM named '{vm_name}' in the target project",
                parameter="vm_name",
                hint="Check the name, or list all migrations",
            )
    return found, malformed


def set_schedule(
    openstack, state: MigrationState, *, paused: Optional[bool], cadence: Optional[str], check_mode: bool
) -> Tuple[bool, Dict[str, object], Dict[str, object]]:
    """Apply pause/cadence; returns (changed, before, after) for the diff."""
    before = {"paused": state.paused, "cadence": state.cadence}
    after = dict(before)
    if paused is not None:
        after["paused"] = paused
    if cadence is not None:
        if cadence not in CADENCES:
            raise ValueError(cadence)
        after["cadence"] = cadence
    changed = after != before
    if changed and not check_mode:
        state.paused, state.cadence = bool(after["paused"]), str(after["cadence"])
        store.save_operator(openstack, state)  # the operator's fields only: a running sync keeps its own
    return changed, before, after
