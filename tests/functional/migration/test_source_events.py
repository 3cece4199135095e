"""Real-world events on the source, thrown by the vSphere lab from real state, and what a sync makes of them.

Each test ends by comparing every volume with its source disk byte for byte. The VM is the lab's
events VM, so that what the events leave behind (grown disks) never changes the other tests' VMs.
"""

import re

import pytest

from ansible_collections.xms.warm_migration.plugins.module_utils.migration import store
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.context import MigrationContext
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.cutover import run_cutover
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.errors import PhaseError, PreflightError
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.initialize import (
    RemovedDisks,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.sync import run_sync
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack import volumes as os_volumes
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack.client import OpenStackClient
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack.errors import OpenStackError
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere import cbt, inventory

from ..vsphere.conftest import add_disk, grow_disk, remove_disk, set_cbt
from .conftest import EVENTS_VM, assert_volumes_equal_source, data_cutover, lab_cmd, power_state, snapshot_names, start

MiB, GiB = 1 << 20, 1 << 30


def seeded(vsphere, vm, openstack, target, settings) -> str:
    migration_id = start(vsphere, vm, openstack, target).migration_id
    assert run_sync(MigrationContext.read(vsphere, vm, openstack), settings).kind == "seed"
    return migration_id


def test_cbt_switched_off_or_reset_is_answered_by_a_full_resync_and_never_an_empty_change_id(
    vsphere, events_vm, openstack, target, settings
):
    key = str(inventory.inventory(vsphere, events_vm).disks[0].key)
    # Data where the guest trims below, whatever earlier runs left there: a trim of an area that is
    # zero already changes nothing, and the volume rightly stays as it is.
    lab_cmd("mark", EVENTS_VM, key, "0", "written-before-the-seed", str(12 * MiB))
    migration_id = seeded(vsphere, events_vm, openstack, target, settings)
    assert key == str(store.load(openstack, migration_id).disks[0].disk_key)

    # Switched off (vCenter clears every change id) while the guest trims data the seed copied.
    set_cbt(vsphere, events_vm, False)
    lab_cmd("zero", EVENTS_VM, key, "0", str(4 * MiB))
    resync = run_sync(MigrationContext.read(vsphere, events_vm, openstack), settings)
    state = store.load(openstack, migration_id)
    assert resync.kind == "full_resync" and any("CBT was off" in w for w in resync.warnings)
    assert all(d.change_id for d in state.disks), "a sync recorded an empty change id"
    assert inventory.inventory(vsphere, events_vm).cbt_enabled
    assert_volumes_equal_source(vsphere, events_vm, openstack, state)

    # The next sync is an incremental from the new history, and the guest's next trim reaches the volume.
    lab_cmd("zero", EVENTS_VM, key, str(4 * MiB), str(4 * MiB))
    after = run_sync(MigrationContext.read(vsphere, events_vm, openstack), settings)
    assert after.kind == "incremental" and after.changed  # a hole: zeroed on the volume without a read
    assert after.disks[0]["stats"]["bytes_zeroed"] == 4 * MiB and after.disks[0]["stats"]["bytes_read"] == 0
    assert_volumes_equal_source(vsphere, events_vm, openstack, store.load(openstack, migration_id))

    # VMware's "reset CBT" procedure (off, then on): a new history; the resync writes the zeros too.
    set_cbt(vsphere, events_vm, False)
    set_cbt(vsphere, events_vm, True)
    lab_cmd("zero", EVENTS_VM, key, str(8 * MiB), str(4 * MiB))
    reset = run_sync(MigrationContext.read(vsphere, events_vm, openstack), settings)
    state = store.load(openstack, migration_id)
    assert reset.kind == "full_resync" and all(d.change_id for d in state.disks)
    assert_volumes_equal_source(vsphere, events_vm, openstack, state)


def test_a_disk_grown_during_the_warm_phase_extends_its_volume_and_copies_the_new_area(
    vsphere, events_vm, openstack, target, settings
):
    migration_id = seeded(vsphere, events_vm, openstack, target, settings)
    disk = store.load(openstack, migration_id).disks[0]
    grown = disk.capacity + GiB + MiB + 512 * 1024  # not a whole number of GiB: the volume rounds up
    grow_disk(vsphere, events_vm, disk.disk_key, grown)
    lab_cmd("write", EVENTS_VM, str(disk.disk_key), "12")  # anywhere on the grown disk, the new area included

    predicted = run_sync(MigrationContext.read(vsphere, events_vm, openstack), settings, check_mode=True)
    assert predicted.disks[0]["planned_bytes"] >= grown - disk.capacity
    sync = run_sync(MigrationContext.read(vsphere, events_vm, openstack), settings)
    state = store.load(openstack, migration_id)
    assert sync.kind == "incremental" and state.disks[0].capacity == grown
    volume = next(v for v in os_volumes.find_volumes(openstack, migration_id) if v.id == disk.volume_id)
    assert volume.size_bytes == -(-grown // GiB) * GiB
    assert_volumes_equal_source(vsphere, events_vm, openstack, state)
    again = run_sync(MigrationContext.read(vsphere, events_vm, openstack), settings)
    assert again.kind == "incremental" and again.bytes_copied == 0


def test_a_volume_that_cannot_grow_stops_the_sync_before_any_copy(vsphere, events_vm, openstack, target, settings):
    """Cinder refuses the extension (the project's quota is used up): the error names the volume, nothing is copied."""
    admin = OpenStackClient.connect(cloud="xms-admin")
    project = admin.conn.identity.find_project("xms-lab")
    quota = admin.conn.block_storage.get_quota_set(project.id)
    migration_id = seeded(vsphere, events_vm, openstack, target, settings)
    before = store.load(openstack, migration_id)
    try:
        used = admin.conn.block_storage.get_quota_set(project.id, usage=True).usage["gigabytes"]
        admin.conn.block_storage.update_quota_set(project.id, gigabytes=used)
        disk = before.disks[1]
        volume_bytes = next(v.size_bytes for v in os_volumes.find_volumes(openstack, migration_id)
                            if v.id == disk.volume_id)  # fmt: skip
        grow_disk(vsphere, events_vm, disk.disk_key, volume_bytes + MiB)  # one GiB more of volume
        with pytest.raises(OpenStackError) as err:
            run_sync(MigrationContext.read(vsphere, events_vm, openstack), settings)
        assert disk.volume_id in str(err.value) and "nothing was copied" in str(err.value)
        after = store.load(openstack, migration_id)
        assert [(d.change_id, d.capacity) for d in after.disks] == [(d.change_id, d.capacity) for d in before.disks]
        assert after.sync_count == before.sync_count and after.bytes_incr == before.bytes_incr
        assert not after.is_busy()
    finally:
        admin.conn.block_storage.update_quota_set(project.id, gigabytes=quota.gigabytes)
    assert run_sync(MigrationContext.read(vsphere, events_vm, openstack), settings).kind == "incremental"  # room again
    assert_volumes_equal_source(vsphere, events_vm, openstack, store.load(openstack, migration_id))


def operator_snapshot(vsphere, vm, name: str):
    """Take a snapshot as an operator would (vCenter's client, not this collection)."""
    vsphere.wait_task(vm.CreateSnapshot_Task(name, "taken by the operator", False, False), f"snapshot {name}")
    return next(t.snapshot for t in cbt._walk(inventory.properties(vsphere, vm, ["snapshot"]).get("snapshot"))
                if t.name == name)  # fmt: skip


def test_an_operators_snapshots_are_warned_about_never_touched_and_syncs_stay_correct(
    vsphere, events_vm, openstack, target, settings
):
    operator_snapshot(vsphere, events_vm, "operator-before-patch")
    try:
        init = start(vsphere, events_vm, openstack, target)
        dated = re.compile(r"1 snapshot\(s\), the oldest taken \d{4}-\d\d-\d\d \(0 day\(s\) ago\)")  # vCenter's time
        assert any(dated.search(w) for w in init.warnings)
        assert run_sync(MigrationContext.read(vsphere, events_vm, openstack), settings).kind == "seed"
        key = str(store.load(openstack, init.migration_id).disks[0].disk_key)
        lab_cmd("write", EVENTS_VM, key, "6")
        operator_snapshot(vsphere, events_vm, "operator-after-patch")  # one more, between two syncs
        lab_cmd("write", EVENTS_VM, key, "6")
        sync = run_sync(MigrationContext.read(vsphere, events_vm, openstack), settings)
        assert sync.kind == "incremental" and sync.bytes_copied > 0
        assert snapshot_names(vsphere, events_vm) == ["operator-after-patch", "operator-before-patch"]
        assert_volumes_equal_source(vsphere, events_vm, openstack, store.load(openstack, init.migration_id))
    finally:
        vsphere.wait_task(events_vm.RemoveAllSnapshots_Task(), "removing the operator's snapshots")


def test_a_revert_to_a_snapshot_older_than_the_last_sync_is_answered_by_a_full_resync(
    vsphere, events_vm, openstack, target, settings
):
    migration_id = seeded(vsphere, events_vm, openstack, target, settings)
    key = str(store.load(openstack, migration_id).disks[0].disk_key)
    before = operator_snapshot(vsphere, events_vm, "operator-before-upgrade")
    try:
        lab_cmd("write", EVENTS_VM, key, "8")  # the upgrade's writes, copied by the next sync
        assert run_sync(MigrationContext.read(vsphere, events_vm, openstack), settings).bytes_copied > 0
        vsphere.wait_task(before.RevertToSnapshot_Task(), "reverting")  # the upgrade is undone on the source
        resync = run_sync(MigrationContext.read(vsphere, events_vm, openstack), settings)
        assert resync.kind == "full_resync" and any("reverted" in w for w in resync.warnings)
        assert_volumes_equal_source(vsphere, events_vm, openstack, store.load(openstack, migration_id))
        lab_cmd("write", EVENTS_VM, key, "3")
        assert run_sync(MigrationContext.read(vsphere, events_vm, openstack), settings).kind == "incremental"
        assert_volumes_equal_source(vsphere, events_vm, openstack, store.load(openstack, migration_id))
    finally:
        vsphere.wait_task(events_vm.RemoveAllSnapshots_Task(), "removing the operator's snapshots")


def test_a_disk_added_then_one_removed_after_the_seed_follow_the_documented_path(
    vsphere, events_vm, openstack, target, settings
):
    migration_id = seeded(vsphere, events_vm, openstack, target, settings)
    state = store.load(openstack, migration_id)
    earlier = MigrationContext.read(vsphere, events_vm, openstack)  # a run that read the VM before the disk came
    added = add_disk(vsphere, events_vm, 24 * MiB)
    lab_cmd("write", EVENTS_VM, str(added), "5")

    with pytest.raises(PhaseError) as err:  # every sync says what to do
        run_sync(MigrationContext.read(vsphere, events_vm, openstack), settings)
    assert "warm_migration_init" in str(err.value) and str(added) in str(err.value)
    with pytest.raises(PhaseError) as err:  # a run's sync checks the disk set of its own snapshot, too
        run_sync(earlier, settings)
    assert "warm_migration_init" in str(err.value) and str(added) in str(err.value)
    assert snapshot_names(vsphere, events_vm) == []  # its snapshot was removed again
    with pytest.raises(PhaseError):  # and the cutover refuses while the source still runs
        run_cutover(MigrationContext.read(vsphere, events_vm, openstack), target,
                    data_cutover(settings))  # fmt: skip
    assert power_state(vsphere, events_vm) == "poweredOn"

    init = start(vsphere, events_vm, openstack, target)
    assert init.changed and [d.disk_key for d in init.state.disks] == [*(d.disk_key for d in state.disks), added]
    sync = run_sync(MigrationContext.read(vsphere, events_vm, openstack), settings)
    assert [d["kind"] for d in sync.disks] == ["incremental", "incremental", "seed"]
    assert_volumes_equal_source(vsphere, events_vm, openstack, store.load(openstack, migration_id))

    gone = state.disks[1]
    remove_disk(vsphere, events_vm, gone.disk_key)
    with pytest.raises(PreflightError) as err:  # nothing is dropped unless the operator says how
        start(vsphere, events_vm, openstack, target)
    assert err.value.parameter == "removed_disks" and gone.volume_id in str(err.value)
    assert gone.volume_id in {v.id for v in os_volumes.find_volumes(openstack, migration_id)}
    kept = start(vsphere, events_vm, openstack, target, removed_disks=RemovedDisks.KEEP)
    assert kept.changed and gone.disk_key not in [d.disk_key for d in kept.state.disks]
    volume = openstack.conn.block_storage.get_volume(gone.volume_id)  # kept, without its record
    assert not any(k.startswith("xms_") for k in volume.metadata)
    lab_cmd("write", EVENTS_VM, str(added), "2")
    assert run_sync(MigrationContext.read(vsphere, events_vm, openstack), settings).kind == "incremental"
    assert_volumes_equal_source(vsphere, events_vm, openstack, store.load(openstack, migration_id))
    os_volumes.delete_volumes(openstack, [gone.volume_id])
