"""Abandoning a migration (warm_migration_init with state=absent): its volumes and its record go.

What a wave leaves when a VM is dropped from it: volumes that hold quota and a record the report
keeps listing. Everything is checked before anything is deleted, and each refusal names the way on:
a run that holds the migration (its copy would write into deleted volumes), a cutover under way
(the source may be off: roll it back first), a test migration (its clones are copies of the
replicas: remove it first) and a completed migration, whose volumes are its instance's disks
(only its record may go, with ``keep_volumes``). CBT stays on at the source: switching it off
resets every change id, which another migration of the VM would pay for with a full seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

from ansible_collections.xms.warm_migration.plugins.module_utils.migration import store
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.context import MigrationContext
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.errors import (
    MigrationBusyError,
    MigrationNotFoundError,
    PhaseError,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.record import MigrationState, Phase
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack import instance as os_instance
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack import volumes as os_volumes


@dataclass
class AbandonOutcome:
    """What was (in check mode: would be) removed; ``phase`` is the migration's phase before."""

    changed: bool
    phase: str = ""
    deleted_volumes: List[str] = field(default_factory=list)
    deleted_snapshots: List[str] = field(default_factory=list)
    released_volumes: List[str] = field(default_factory=list)


def abandon(ctx: MigrationContext, *, keep_volumes: bool, check_mode: bool = False) -> AbandonOutcome:
    """Delete the migration of ``ctx``'s VM (its volumes with their snapshots, or with ``keep_volumes``
    only its record), after every check passed; nothing to do when there is no migration."""
    openstack, migration_id = ctx.openstack, ctx.migration_id
    try:
        state = store.load(openstack, migration_id)
    except MigrationNotFoundError:
        return AbandonOutcome(changed=False)
    _may_abandon(openstack, state, keep_volumes)
    volumes = os_volumes.find_volumes(openstack, migration_id)
    ids = [v.id for v in volumes]
    outcome = AbandonOutcome(changed=True, phase=state.phase.value)
    if keep_volumes:
        outcome.released_volumes = ids
    else:
        outcome.deleted_volumes, outcome.deleted_snapshots = ids, os_volumes.snapshots_of(openstack, ids)
    if check_mode:
        return outcome
    if keep_volumes:
        for volume in volumes:
            os_volumes.release_volume(openstack, volume)
    else:
        os_volumes.delete_volumes(openstack, ids)  # refuses an attached volume before it deletes any
    return outcome


def _may_abandon(openstack, state: MigrationState, keep_volumes: bool) -> None:
    """Refuse (nothing changed yet) what cannot be abandoned now, naming the way on."""
    migration_id = state.migration_id
    if state.owner:
        raise MigrationBusyError(
            f"migration {migration_id} is held by {state.owner}: a sync, seed or cutover of it is running",
            hint="Wait for it to finish (migration_info shows its progress), then run again. A run that was killed"
            " holds it until the next block_sync of the VM on its conversion host takes it over and releases it",
        )
    if state.phase is Phase.CUTOVER:
        raise PhaseError(
            f"migration {migration_id} is in cutover (step '{state.cutover_step or 'start'}'): the source VM may be"
            " off and an instance may run on the volumes",
            parameter="state",
            hint="Roll the cutover back first (playbooks/rollback.yml, or cutover with state: rolled_back), then"
            " abandon the migration",
        )
    if state.phase is Phase.COMPLETED and not keep_volumes:
        raise PhaseError(
            f"migration {migration_id} is completed: its volumes are the disks of instance"
            f" {state.instance_id or '(unknown)'}",
            parameter="keep_volumes",
            hint="Set keep_volumes: true to drop only the migration's record and leave the instance its volumes",
        )
    replicas = [d.volume_id for d in state.disks]
    if os_instance.find_test_server(openstack, migration_id) is not None or os_volumes.find_test_clones(
        openstack, os_instance.TEST_TAG, migration_id, replicas
    ):
        raise PhaseError(
            f"migration {migration_id} has a test migration (an instance or clones of its replicas)",
            parameter="state",
            hint="Remove it first with migration_test (state: absent), then abandon the migration",
        )
