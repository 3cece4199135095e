"""Abandoning a migration: the refusals that come before anything is asked of Nova or deleted.

The record is FakeCinder's (see test_ownership); the lab shows a ready migration's volumes deleted, a
completed one refused and its record dropped with keep_volumes, and check mode
(tests/functional/migration/test_awx.py)."""

from types import SimpleNamespace

import pytest
from test_ownership import FakeCinder, a_migration  # the record's in-memory Cinder

from ansible_collections.xms.warm_migration.plugins.module_utils.migration.abandon import abandon
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.errors import (
    MigrationBusyError,
    PhaseError,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.record import utcnow


def ctx(cinder):
    return SimpleNamespace(openstack=cinder, migration_id="vm-1")


def test_a_migration_a_run_holds_is_not_abandoned():
    cinder = a_migration(owner="conv-2:4242:0123456789ab", heartbeat=utcnow())
    with pytest.raises(MigrationBusyError, match="held by conv-2:4242"):
        abandon(ctx(cinder), keep_volumes=False)
    assert list(cinder.metadata) == ["vol-a"]


@pytest.mark.parametrize("keep_volumes", [False, True])
def test_a_migration_in_cutover_is_rolled_back_first(keep_volumes):
    cinder = a_migration()
    cinder.metadata["vol-a"]["xms_phase"] = "cutover"
    with pytest.raises(PhaseError) as err:
        abandon(ctx(cinder), keep_volumes=keep_volumes)
    assert "rolled_back" in err.value.hint and err.value.parameter == "state"


def test_a_completed_migration_keeps_its_volumes_or_is_refused_naming_keep_volumes():
    cinder = a_migration()
    cinder.metadata["vol-a"]["xms_phase"] = "completed"
    with pytest.raises(PhaseError) as err:
        abandon(ctx(cinder), keep_volumes=False)
    assert err.value.parameter == "keep_volumes"


def test_no_migration_is_nothing_to_do():
    assert abandon(ctx(FakeCinder({})), keep_volumes=False).changed is False
