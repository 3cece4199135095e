"""Cutover on both labs: shutdown first, final delta, conversion, instance; resume and rollback.

``lab-vm-1`` (data disks, conversion skipped) shows the step bookkeeping: a
cutover that fails at instance creation resumes there without copying again.
``lab-vm-linux`` (the lab guest) goes all the way: converted by virt-v2v, boot
checked under QEMU with its MAC, booted by Nova. ``lab-vm-2`` is no guest at
all: its conversion fails, and the rollback powers it on again.
"""

import pytest

from ansible_collections.xms.warm_migration.plugins.module_utils.conversion.errors import ConversionError
from ansible_collections.xms.warm_migration.plugins.module_utils.conversion.virt_v2v import ConversionOptions
from ansible_collections.xms.warm_migration.plugins.module_utils.copy.extents import Extent, merge_extents
from ansible_collections.xms.warm_migration.plugins.module_utils.migration import store
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.cutover import (
    CutoverSettings,
    rollback,
    run_cutover,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.initialize import initialize
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.sync import run_sync
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack import instance as os_instance
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack.errors import InstanceError
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere import inventory
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere.power import power_on

from .conftest import annotation, assert_volumes_equal_source, lab_cmd, power_state, reset_vm


@pytest.fixture
def cutover_vm(vsphere, openstack, request):
    vm = inventory.find_vm(vsphere, name=request.param)
    reset_vm(vsphere, vm, openstack)
    yield vm
    reset_vm(vsphere, vm, openstack)


@pytest.mark.parametrize("cutover_vm", ["lab-vm-1"], indirect=True)
def test_a_cutover_failing_at_the_instance_resumes_there_without_copying_again(
    vsphere, cutover_vm, openstack, target, settings
):
    vm = cutover_vm
    migration_id = initialize(vsphere, vm, openstack, target).migration_id
    run_sync(vsphere, vm, openstack, migration_id, settings)
    disk_key = str(store.load(openstack, migration_id).disks[0].disk_key)
    lab_cmd("write", "lab-vm-1", disk_key, "4")  # the guest keeps writing until it is shut down

    mac = inventory.inventory(vsphere, vm).nics[0].mac
    target.fixed_ips = {mac: "10.99.0.5"}  # not in lab-net-a's subnet: Neutron refuses the port
    cutover = CutoverSettings(sync=settings, conversion=ConversionOptions(skip=True), instance_timeout=300)
    predicted = run_cutover(vsphere, vm, openstack, migration_id, target, cutover, check_mode=True)
    assert predicted.steps_done == ["shutdown", "final_sync", "converted", "instance", "completed"]
    assert power_state(vsphere, vm) == "poweredOn"  # check mode changed nothing

    with pytest.raises(InstanceError) as err:
        run_cutover(vsphere, vm, openstack, migration_id, target, cutover)
    assert "10.99.0.5" in str(err.value) or "fixed" in str(err.value).lower()
    state = store.load(openstack, migration_id)
    assert (state.phase, state.cutover_step, state.sync_count) == ("cutover", "converted", 2)
    assert state.last_error and power_state(vsphere, vm) == "poweredOff"
    assert os_instance.find_server(openstack, migration_id) is None
    assert not [p for p in openstack.conn.network.ports() if p.mac_address == mac.lower()]  # rolled back
    assert_volumes_equal_source(vsphere, vm, openstack, state)  # the final delta came after the shutdown

    target.fixed_ips = {}
    resumed = run_cutover(vsphere, vm, openstack, migration_id, target, cutover)
    assert resumed.steps_done == ["instance", "completed"] and resumed.final_sync is None
    state = store.load(openstack, migration_id)
    assert (state.phase, state.sync_count, state.bytes_incr) == ("completed", 2, resumed.state.bytes_incr)
    server = os_instance.find_server(openstack, migration_id)
    assert server.status == "ACTIVE" and state.instance_id == server.id
    assert [p["mac"] for p in resumed.instance["ports"]] == [mac.lower()]
    assert sorted(resumed.instance["volumes"]) == sorted(d.volume_id for d in state.disks)
    assert openstack.conn.block_storage.get_volume(state.disks[0].volume_id).is_bootable
    assert "do not power on" in annotation(vsphere, vm)

    again = run_cutover(vsphere, vm, openstack, migration_id, target, cutover)
    assert not again.changed and again.steps_done == []
    late = run_sync(vsphere, vm, openstack, migration_id, settings)  # a schedule that still fires
    assert (late.changed, late.kind, late.reason) == (False, "skipped", "completed")


@pytest.mark.parametrize("cutover_vm", ["lab-vm-linux"], indirect=True)
def test_the_lab_guest_is_converted_boot_checked_and_booted(vsphere, cutover_vm, openstack, target, settings):
    vm = cutover_vm
    migration_id = initialize(vsphere, vm, openstack, target).migration_id
    # The boot disk is on an LSI Logic SAS controller, the data disk on a PVSCSI one: boot disk first.
    assert [d.capacity for d in store.load(openstack, migration_id).disks] == [1 << 30, 16 << 20]
    run_sync(vsphere, vm, openstack, migration_id, settings)
    data_disk = str(store.load(openstack, migration_id).disks[1].disk_key)
    lab_cmd("write", "lab-vm-linux", data_disk, "3")
    assert run_sync(vsphere, vm, openstack, migration_id, settings).bytes_copied > 0

    cutover = CutoverSettings(sync=settings, boot_check=True, boot_check_timeout=900,
                              conversion=ConversionOptions(timeout_s=1800, log_dir=settings.state_dir))  # fmt: skip
    outcome = run_cutover(vsphere, vm, openstack, migration_id, target, cutover)
    assert outcome.steps_done == ["shutdown", "final_sync", "converted", "instance", "completed"]
    assert outcome.conversion["converted"] and outcome.boot["reached_userspace"]
    assert outcome.boot["mac_seen"] and "00:50:56:01:00:07" in outcome.boot["macs"].values()
    assert outcome.instance["status"] == "ACTIVE"
    state = store.load(openstack, migration_id)
    assert state.converted and state.phase == "completed"


@pytest.mark.parametrize("cutover_vm", ["lab-vm-2"], indirect=True)
def test_a_failed_conversion_stays_retryable_and_the_rollback_powers_the_source_on(
    vsphere, cutover_vm, openstack, target, settings
):
    vm = cutover_vm
    migration_id = initialize(vsphere, vm, openstack, target).migration_id
    run_sync(vsphere, vm, openstack, migration_id, settings)
    cutover = CutoverSettings(sync=settings, conversion=ConversionOptions(timeout_s=900, log_dir=settings.state_dir))
    with pytest.raises(ConversionError) as err:  # lab-vm-2's disks hold test patterns, no operating system
        run_cutover(vsphere, vm, openstack, migration_id, target, cutover)
    assert "virt-v2v-in-place failed" in str(err.value)
    state = store.load(openstack, migration_id)
    assert (state.phase, state.cutover_step, state.converted) == ("cutover", "final_sync", False)
    assert power_state(vsphere, vm) == "poweredOff"

    assert state.needs_full_resync  # recorded before virt-v2v ran: it may have written part of the volumes

    undone = rollback(vsphere, vm, openstack, migration_id, cutover)
    assert undone.changed and power_state(vsphere, vm) == "poweredOn"
    state = store.load(openstack, migration_id)
    assert (state.phase, state.cutover_step, state.needs_full_resync) == ("ready", "", True)
    resync = run_sync(vsphere, vm, openstack, migration_id, settings)
    assert resync.kind == "full_resync"
    state = store.load(openstack, migration_id)
    assert not state.needs_full_resync
    assert_volumes_equal_source(vsphere, vm, openstack, state)
    assert run_sync(vsphere, vm, openstack, migration_id, settings).kind == "incremental"


@pytest.mark.parametrize("cutover_vm", ["lab-vm-1"], indirect=True)
def test_a_source_powered_on_again_between_cutover_runs_is_shut_down_and_synced_again(
    vsphere, cutover_vm, openstack, target, settings
):
    """The record says "shut down", the VM runs: the rerun reads the power state, shuts it down, syncs again."""
    vm = cutover_vm
    migration_id = initialize(vsphere, vm, openstack, target).migration_id
    run_sync(vsphere, vm, openstack, migration_id, settings)
    mac = inventory.inventory(vsphere, vm).nics[0].mac
    target.fixed_ips = {mac: "10.99.0.5"}  # not in lab-net-a's subnet: the first run fails at the instance
    cutover = CutoverSettings(sync=settings, conversion=ConversionOptions(skip=True), instance_timeout=300)
    with pytest.raises(InstanceError):
        run_cutover(vsphere, vm, openstack, migration_id, target, cutover)
    assert store.load(openstack, migration_id).cutover_step == "converted"

    power_on(vsphere, vm)  # somebody starts the source again, and its guest writes
    disk_key = str(store.load(openstack, migration_id).disks[0].disk_key)
    written = lab_cmd("write", "lab-vm-1", disk_key, "4")["written"]
    target.fixed_ips = {}
    rerun = run_cutover(vsphere, vm, openstack, migration_id, target, cutover)
    assert rerun.steps_done == ["shutdown", "final_sync", "converted", "instance", "completed"]
    assert any("ran again" in w for w in rerun.warnings)
    assert rerun.final_sync["bytes"] == sum(e.length for e in merge_extents(Extent(o, n) for o, n in written))
    assert power_state(vsphere, vm) == "poweredOff"
    assert store.load(openstack, migration_id).sync_count == 3
