"""The warm migration lifecycle on both labs: initialize, seed, incrementals, pause, refusals."""

import pytest

from ansible_collections.xms.warm_migration.plugins.module_utils.copy.extents import Extent, merge_extents
from ansible_collections.xms.warm_migration.plugins.module_utils.migration import store
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.context import MigrationContext
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.errors import (
    MigrationBusyError,
    PreflightError,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.info import set_schedule
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.initialize import (
    NetworkMapping,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.lock import host_lock
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.sync import run_sync
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack import volumes as os_volumes

from .conftest import assert_volumes_equal_source, lab_cmd, start


def test_initialize_predicts_creates_and_then_changes_nothing(vsphere, source, openstack, target):
    predicted = start(vsphere, source, openstack, target, check_mode=True)
    assert predicted.changed and os_volumes.find_volumes(openstack, predicted.migration_id) == []
    assert all(c["ok"] for c in predicted.checks)
    done = start(vsphere, source, openstack, target)
    assert done.changed and done.state.phase == "initializing" and len(done.state.disks) == 2
    volumes = os_volumes.find_volumes(openstack, done.migration_id)
    assert sorted(v.size_bytes for v in volumes) == [1 << 30, 1 << 30] and not any(v.bootable for v in volumes)
    again = start(vsphere, source, openstack, target)
    assert not again.changed and {d.volume_id for d in again.state.disks} == {d.volume_id for d in done.state.disks}


def test_bad_input_is_refused_and_creates_nothing(vsphere, source, openstack, target):
    target.volume_type = "no-such-type"
    with pytest.raises(PreflightError) as err:
        start(vsphere, source, openstack, target)
    assert err.value.parameter == "volume_type" and "Nothing was created" in str(err.value)
    target.volume_type = "standard-ssd"
    target.network_map = [NetworkMapping(source="other-portgroup", network="lab-net-a")]
    with pytest.raises(PreflightError) as err:
        start(vsphere, source, openstack, target)
    assert err.value.parameter == "network_map" and "DC0_DVPG0" in str(err.value)
    assert not [v for vols in os_volumes.list_migrations(openstack).values() for v in vols
                if v.record.get("vm_name") == "lab-vm-2"]  # fmt: skip


def test_seed_then_incrementals_keep_the_volumes_equal_to_the_source(
    vsphere, source, openstack, target, settings, inventory_reads
):
    migration_id = start(vsphere, source, openstack, target).migration_id
    planned = run_sync(MigrationContext.read(vsphere, source, openstack), settings, check_mode=True)
    assert planned.kind == "seed" and planned.bytes_copied > 0
    assert store.load(openstack, migration_id).sync_count == 0  # check mode changed nothing

    run = MigrationContext.read(vsphere, source, openstack)
    inventory_reads.clear()
    seed = run_sync(run, settings)
    assert inventory_reads == []  # the run's inventory was read once, with its context
    state = store.load(openstack, migration_id)
    assert seed.kind == "seed" and state.phase == "ready" and state.sync_count == 1 and state.seeded
    assert state.bytes_full == seed.bytes_copied > 0 and state.synced_at is not None
    assert_volumes_equal_source(vsphere, source, openstack, state)

    disk_key = str(state.disks[0].disk_key)
    written = lab_cmd("write", "lab-vm-2", disk_key, "5")["written"]
    incremental = run_sync(MigrationContext.read(vsphere, source, openstack), settings)
    state = store.load(openstack, migration_id)
    assert incremental.kind == "incremental" and state.sync_count == 2
    changed = sum(e.length for e in merge_extents(Extent(o, n) for o, n in written))  # writes may overlap
    assert incremental.bytes_copied == changed
    assert state.bytes_incr == incremental.bytes_copied
    assert_volumes_equal_source(vsphere, source, openstack, state)

    nothing = run_sync(MigrationContext.read(vsphere, source, openstack), settings)
    assert nothing.kind == "incremental" and nothing.bytes_copied == 0


def test_a_second_sync_is_refused_while_one_runs(vsphere, source, openstack, target, settings):
    migration_id = start(vsphere, source, openstack, target).migration_id
    with host_lock(settings.state_dir, migration_id), pytest.raises(MigrationBusyError) as err:
        run_sync(MigrationContext.read(vsphere, source, openstack), settings)
    assert "is running" in str(err.value)
    assert store.load(openstack, migration_id).sync_count == 0


def test_a_paused_migration_is_skipped_until_resumed(vsphere, source, openstack, target, settings):
    migration_id = start(vsphere, source, openstack, target).migration_id
    state = store.load(openstack, migration_id)
    assert set_schedule(openstack, state, paused=True, cadence=None, check_mode=False)[0]
    skipped = run_sync(MigrationContext.read(vsphere, source, openstack), settings)
    assert not skipped.changed and skipped.reason == "paused"
    set_schedule(openstack, store.load(openstack, migration_id), paused=False, cadence=None, check_mode=False)
    assert run_sync(MigrationContext.read(vsphere, source, openstack), settings).kind == "seed"
