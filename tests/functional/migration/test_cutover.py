"""Cutover on both labs: shutdown first, final delta, conversion, instance; resume and rollback.

``lab-vm-1`` (data disks, conversion skipped) shows the step bookkeeping: a
cutover that fails at instance creation resumes there without copying again.
``lab-vm-linux`` (the lab guest) goes all the way: its boot volume snapshotted
in Cinder (a qcow2 overlay), converted by virt-v2v, boot checked under QEMU
with its MAC, booted by Nova's libvirt driver, answering at its fixed IP.
``lab-vm-2`` is no guest at all: its conversion fails, and the rollback powers
it on again.
"""

import contextlib
import os
import signal
import subprocess
import sys
import time

import pytest

from ansible_collections.xms.warm_migration.plugins.module_utils.common.errors import WarmMigrationError
from ansible_collections.xms.warm_migration.plugins.module_utils.conversion import overlay
from ansible_collections.xms.warm_migration.plugins.module_utils.conversion.errors import ConversionError
from ansible_collections.xms.warm_migration.plugins.module_utils.conversion.virt_v2v import (
    ConversionOptions,
    ConversionResult,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.copy.extents import Extent, merge_extents
from ansible_collections.xms.warm_migration.plugins.module_utils.migration import cutover as cutover_module
from ansible_collections.xms.warm_migration.plugins.module_utils.migration import store
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.context import MigrationContext
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.cutover import (
    CutoverSettings,
    rollback,
    run_cutover,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.errors import PhaseError, ValidationError
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.sync import run_sync
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.validation import (
    PAST_BOOT_LOADER,
    ValidationSettings,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack import instance as os_instance
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack.attach import attach_for_write
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack.client import OpenStackClient
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack.errors import InstanceError
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack.instance import SERVER_TAG
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere import inventory
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere.power import power_on

from ..openstack.conftest import CLOUDS
from ..processes import command, descendants
from .conftest import annotation, assert_volumes_equal_source, data_cutover, lab_cmd, power_state, start

HERE = os.path.dirname(os.path.abspath(__file__))
COLLECTION_PARENT = sys.modules["ansible_collections"].__path__[0].rsplit("/ansible_collections", 1)[0]
CONVERTERS = ("virt-customize", "virt-v2v-in-place")  # what works on the overlays, started by the cutover


@pytest.fixture
def instance_step_fails_once(monkeypatch):
    """Mock of the cloud refusing the instance after the cutover's checks passed (a port taken, Nova out of
    capacity, in the minutes between): the lab cannot produce that race on demand. The first create fails
    as Neutron does; later ones are real."""
    real = os_instance.create_instance

    def refuse_once(*args, **kwargs):
        monkeypatch.setattr(os_instance, "create_instance", real)
        raise InstanceError("creating instance failed: IP address 10.10.1.77 already allocated in subnet",
                            hint="The volumes are intact; fix the cause and run the cutover again")  # fmt: skip

    monkeypatch.setattr(os_instance, "create_instance", refuse_once)


@pytest.mark.parametrize("cutover_vm", ["lab-vm-1"], indirect=True)
def test_a_cutover_failing_at_the_instance_resumes_there_without_copying_again(
    vsphere, cutover_vm, openstack, target, settings, instance_step_fails_once, inventory_reads
):
    vm = cutover_vm
    migration_id = start(vsphere, vm, openstack, target).migration_id
    run_sync(MigrationContext.read(vsphere, vm, openstack), settings)
    disk_key = str(store.load(openstack, migration_id).disks[0].disk_key)
    lab_cmd("write", "lab-vm-1", disk_key, "4")  # the guest keeps writing until it is shut down

    mac = inventory.inventory(vsphere, vm).nics[0].mac
    cutover = data_cutover(settings, instance_timeout=300)
    predicted = run_cutover(MigrationContext.read(vsphere, vm, openstack), target, cutover, check_mode=True)
    assert predicted.steps_done == ["shutdown", "final_sync", "converted", "instance", "validated", "completed"]
    assert power_state(vsphere, vm) == "poweredOn"  # check mode changed nothing

    run = MigrationContext.read(vsphere, vm, openstack)
    inventory_reads.clear()
    with pytest.raises(InstanceError) as err:
        run_cutover(run, target, cutover)
    assert "already allocated" in str(err.value)
    assert inventory_reads == []  # shutdown, final delta and instance ran on the inventory read with the context
    state = store.load(openstack, migration_id)
    assert (state.phase, state.cutover_step, state.sync_count) == ("cutover", "converted", 2)
    assert state.last_error and power_state(vsphere, vm) == "poweredOff"
    assert os_instance.find_server(openstack, migration_id) is None
    assert not [p for p in openstack.conn.network.ports() if p.mac_address == mac.lower()]  # rolled back
    assert_volumes_equal_source(vsphere, vm, openstack, state)  # the final delta came after the shutdown

    resumed = run_cutover(MigrationContext.read(vsphere, vm, openstack), target, cutover)
    assert resumed.steps_done == ["instance", "validated", "completed"] and resumed.final_sync is None
    state = store.load(openstack, migration_id)
    assert (state.phase, state.sync_count, state.bytes_incr) == ("completed", 2, resumed.state.bytes_incr)
    server = os_instance.find_server(openstack, migration_id)
    assert server.status == "ACTIVE" and state.instance_id == server.id
    assert [p["mac"] for p in resumed.instance["ports"]] == [mac.lower()]
    assert sorted(resumed.instance["volumes"]) == sorted(d.volume_id for d in state.disks)
    assert openstack.conn.block_storage.get_volume(state.disks[0].volume_id).is_bootable
    assert "do not power on" in annotation(vsphere, vm)

    again = run_cutover(MigrationContext.read(vsphere, vm, openstack), target, cutover)
    assert not again.changed and again.steps_done == []
    late = run_sync(MigrationContext.read(vsphere, vm, openstack), settings)  # a schedule that still fires
    assert (late.changed, late.kind, late.reason) == (False, "skipped", "completed")


@pytest.mark.timeout(1800)  # under TCG: a 1 GiB seed, the conversion, the boot check, the instance's boot
@pytest.mark.parametrize("cutover_vm", ["lab-vm-linux"], indirect=True)
def test_the_lab_guest_is_converted_boot_checked_and_booted(vsphere, cutover_vm, openstack, target, settings):
    vm = cutover_vm
    migration_id = start(vsphere, vm, openstack, target).migration_id
    # The boot disk is on an LSI Logic SAS controller, the data disk on a PVSCSI one: boot disk first.
    assert [d.capacity for d in store.load(openstack, migration_id).disks] == [1 << 30, 16 << 20]
    run_sync(MigrationContext.read(vsphere, vm, openstack), settings)
    # Someone snapshots the boot disk's replica in Cinder: its NFS driver turns the volume's active file into
    # a qcow2 overlay, which the next syncs and the conversion write through, and which Nova then boots.
    storage = openstack.conn.block_storage
    boot_volume = store.load(openstack, migration_id).disks[0].volume_id
    backup = storage.create_snapshot(volume_id=boot_volume, name="owner-backup")
    storage.wait_for_status(backup, status="available", wait=120)
    data_disk = str(store.load(openstack, migration_id).disks[1].disk_key)
    lab_cmd("write", "lab-vm-linux", data_disk, "3")
    assert run_sync(MigrationContext.read(vsphere, vm, openstack), settings).bytes_copied > 0

    cutover = CutoverSettings(sync=settings, boot_check=True, boot_check_timeout=900,
                              conversion=ConversionOptions(timeout_s=1800, log_dir=settings.state_dir),
                              validation=ValidationSettings(timeout_s=600), post_migration_snapshot=True)  # fmt: skip
    outcome = run_cutover(MigrationContext.read(vsphere, vm, openstack), target, cutover)
    assert outcome.steps_done == ["shutdown", "final_sync", "converted", "instance", "validated", "completed"]
    # The boot check heard the guest (its DHCP or its IPv6 listener report, whichever came first) from the source
    # MAC its pinned ens192 carries.
    assert outcome.conversion["converted"] and outcome.boot["required"] == ["00:50:56:01:00:07"]
    assert outcome.boot["nics"]["00:50:56:01:00:07"], outcome.boot
    # The guest's ifupdown configures ens192 (its vmxnet3 in slot 192): the name is kept on virtio.
    assert outcome.conversion["pinned_names"] == {"ens192": "00:50:56:01:00:07"}
    assert outcome.instance["status"] == "ACTIVE"
    state = store.load(openstack, migration_id)
    assert state.converted and state.phase == "completed"
    # The downtime of the lab's Debian guest, measured: from its shutdown to its instance answering.
    steps = ["shutdown", "final_sync", "converted", "boot_checked", "instance", "validated", "completed"]
    assert list(outcome.timings) == steps and outcome.downtime_s > 0
    assert abs(outcome.downtime_s - sum(outcome.timings[s] for s in steps[1:6])) <= 5  # to its guest answering
    assert state.metrics()["downtime_seconds"] == outcome.downtime_s
    print(f"lab guest downtime: {outcome.downtime_s} s, {outcome.timings}, validation: {outcome.validation}")
    # The instance runs in the lab's Nova (libvirt on QEMU): its guest answers at its fixed IP (the address
    # Neutron's DHCP gave the port), and its console shows the boot. The guest boots "quiet" and answers
    # before it writes a line the validation recognises (virt-v2v's first-boot script, ~10 s later): the
    # validation does not wait for the console once the network answered; Nova's console shows it after.
    assert outcome.validation["passed"], outcome.validation
    checks = {e["check"]: e for e in outcome.validation["evidence"]}
    assert checks["ping"]["ok"] and checks["ping"]["target"] in outcome.instance["ports"][0]["fixed_ips"]
    assert state.validation.startswith("passed")
    deadline = time.monotonic() + 180
    while not PAST_BOOT_LOADER.search(os_instance.console_output(openstack, outcome.instance["id"])):
        assert time.monotonic() < deadline, os_instance.console_output(openstack, outcome.instance["id"])[-2000:]
        time.sleep(5)
    # Every volume is attached in the VM's boot order: the boot disk first, the data disk after it.
    attached = {a.volume_id: a.device for a in openstack.conn.compute.volume_attachments(outcome.instance["id"])}
    assert [attached[d.volume_id] for d in state.disks] == ["/dev/vda", "/dev/vdb"]
    # The owner's rollback point: one snapshot per volume, taken of the attached volumes (Cinder's NFS driver
    # has Nova's libvirt driver put a qcow2 overlay under the running instance), tagged with the migration.
    snapshots = [storage.get_snapshot(i) for i in outcome.post_migration_snapshots]
    assert [s.volume_id for s in snapshots] == [d.volume_id for d in state.disks]
    assert all(s.status == "available" and s.metadata["xms_post_migration_of"] == migration_id for s in snapshots)
    assert storage.get_snapshot(backup.id).status == "available"  # the owner's snapshot is theirs, untouched


@pytest.mark.parametrize("cutover_vm", ["lab-vm-1"], indirect=True)
def test_an_instance_whose_guest_never_answers_is_not_completed_and_the_rollback_removes_it(
    vsphere, cutover_vm, openstack, target, settings
):
    """lab-vm-1 holds test data, no guest: Nova boots its volumes (SeaBIOS finds nothing to boot), the port
    has its address, nothing answers. That is what a replica left unconverted looks like in the cloud."""
    vm = cutover_vm
    migration_id = start(vsphere, vm, openstack, target).migration_id
    run_sync(MigrationContext.read(vsphere, vm, openstack), settings)
    cutover = CutoverSettings(sync=settings, conversion=ConversionOptions(skip=True), instance_timeout=300,
                              validation=ValidationSettings(timeout_s=20))  # fmt: skip
    with pytest.raises(ValidationError) as err:
        run_cutover(MigrationContext.read(vsphere, vm, openstack), target, cutover)
    assert err.value.parameter == "validation" and "rolled_back" in str(err.value)
    assert "enabled: false" in str(err.value) and "no answer from" in str(err.value)
    state = store.load(openstack, migration_id)
    assert (state.phase, state.cutover_step) == ("cutover", "instance") and state.validation.startswith("failed")
    server = os_instance.find_server(openstack, migration_id)
    assert server.id == state.instance_id and server.status == "SHUTOFF"  # stopped, not deleted
    assert power_state(vsphere, vm) == "poweredOff"
    mac = inventory.inventory(vsphere, vm).nics[0].mac

    would = rollback(MigrationContext.read(vsphere, vm, openstack), cutover, check_mode=True)
    assert would.steps_done == ["delete_instance", "power_on_source", "phase_ready", "full_resync_next"]
    undone = rollback(MigrationContext.read(vsphere, vm, openstack), cutover)
    assert undone.changed and power_state(vsphere, vm) == "poweredOn"
    assert os_instance.find_server(openstack, migration_id) is None
    assert not [p for p in openstack.conn.network.ports() if p.mac_address == mac.lower()]
    state = store.load(openstack, migration_id)
    assert (state.phase, state.instance_id, state.needs_full_resync) == ("ready", "", True)
    # the instance ran on the volumes: the next sync copies them whole, and they equal the source again
    assert run_sync(MigrationContext.read(vsphere, vm, openstack), settings).kind == "full_resync"
    assert_volumes_equal_source(vsphere, vm, openstack, store.load(openstack, migration_id))


@pytest.mark.parametrize("cutover_vm", ["lab-vm-1"], indirect=True)
def test_an_instance_kept_after_a_failed_validation_is_started_and_completed(
    vsphere, cutover_vm, openstack, target, settings
):
    """The operator looked at the instance and keeps it: the rerun with validation off starts it again."""
    vm = cutover_vm
    migration_id = start(vsphere, vm, openstack, target).migration_id
    run_sync(MigrationContext.read(vsphere, vm, openstack), settings)
    cutover = CutoverSettings(sync=settings, conversion=ConversionOptions(skip=True), instance_timeout=300,
                              validation=ValidationSettings(timeout_s=10))  # fmt: skip
    with pytest.raises(ValidationError):
        run_cutover(MigrationContext.read(vsphere, vm, openstack), target, cutover)
    assert os_instance.find_server(openstack, migration_id).status == "SHUTOFF"
    kept = run_cutover(MigrationContext.read(vsphere, vm, openstack), target, data_cutover(settings))
    assert kept.steps_done == ["validated", "completed"] and kept.validation == {"enabled": False}
    assert os_instance.find_server(openstack, migration_id).status == "ACTIVE"
    assert store.load(openstack, migration_id).phase == "completed"


def boot_tagged_server(openstack, migration_id):
    """An instance carrying the migration's tag, booted from a volume of its own."""
    conn = openstack.conn
    volume = conn.block_storage.create_volume(size=1, name=f"stray-{migration_id}", volume_type="standard-ssd",
                                              availability_zone="az1")  # fmt: skip
    conn.block_storage.wait_for_status(volume, status="available", wait=120)
    conn.block_storage.set_volume_bootable_status(volume, True)
    server = conn.compute.create_server(
        name=f"stray-{migration_id}", flavor_id=conn.compute.find_flavor("m1.small").id, networks="none",
        metadata={SERVER_TAG: migration_id},
        block_device_mapping_v2=[{"boot_index": 0, "uuid": volume.id, "source_type": "volume",
                                  "destination_type": "volume", "delete_on_termination": True}],
    )  # fmt: skip
    return conn.compute.wait_for_server(server, wait=300)


@pytest.mark.parametrize("cutover_vm", ["lab-vm-2"], indirect=True)
def test_a_failed_conversion_stays_retryable_and_the_rollback_powers_the_source_on(
    vsphere, cutover_vm, openstack, target, settings
):
    vm = cutover_vm
    migration_id = start(vsphere, vm, openstack, target).migration_id
    run_sync(MigrationContext.read(vsphere, vm, openstack), settings)
    cutover = CutoverSettings(sync=settings, conversion=ConversionOptions(timeout_s=900, log_dir=settings.state_dir))
    with pytest.raises(ConversionError) as err:  # lab-vm-2's disks hold test patterns, no operating system
        run_cutover(MigrationContext.read(vsphere, vm, openstack), target, cutover)
    # the first tool that looks for the guest says so: virt-customize, pinning its NIC's name (ens32, an e1000)
    assert "virt-customize failed: no operating systems were found" in str(err.value)
    state = store.load(openstack, migration_id)
    assert (state.phase, state.cutover_step, state.converted) == ("cutover", "final_sync", False)
    assert power_state(vsphere, vm) == "poweredOff"

    # The conversion worked on overlays: the replicas are exactly as the final sync wrote them.
    assert not state.needs_full_resync and not os.path.exists(overlay.overlay_dir(settings.state_dir, migration_id))
    assert_volumes_equal_source(vsphere, vm, openstack, state)

    # Somebody booted an instance of the migration (its tag) that the record knows nothing of:
    # the rollback asks the cloud and refuses to power the source on beside it.
    stray = boot_tagged_server(openstack, migration_id)
    try:
        with pytest.raises(PhaseError) as err:
            rollback(MigrationContext.read(vsphere, vm, openstack), cutover)
        assert stray.id in str(err.value) and power_state(vsphere, vm) == "poweredOff"
    finally:
        openstack.conn.compute.delete_server(stray.id)
        openstack.conn.compute.wait_for_delete(stray, wait=120)

    would = rollback(MigrationContext.read(vsphere, vm, openstack), cutover, check_mode=True)
    assert would.steps_done == ["power_on_source", "phase_ready"]  # no full resync: nothing was written
    assert power_state(vsphere, vm) == "poweredOff" and store.load(openstack, migration_id).phase == "cutover"
    undone = rollback(MigrationContext.read(vsphere, vm, openstack), cutover)
    assert undone.changed and power_state(vsphere, vm) == "poweredOn"
    state = store.load(openstack, migration_id)
    assert (state.phase, state.cutover_step, state.needs_full_resync) == ("ready", "", False)
    assert run_sync(MigrationContext.read(vsphere, vm, openstack), settings).kind == "incremental"
    assert_volumes_equal_source(vsphere, vm, openstack, store.load(openstack, migration_id))


@pytest.mark.parametrize("cutover_vm", ["lab-vm-2"], indirect=True)
def test_a_conversion_killed_part_way_leaves_the_replicas_as_synced_and_the_rollback_syncs_incrementally(
    vsphere, cutover_vm, openstack, target, settings
):
    """kill -9 of the cutover (and what it started) while virt-customize / virt-v2v work on the overlays: the
    volumes equal the source byte for byte; the rerun makes its overlays anew; the rollback removes the killed
    run's overlays, and the next sync is an incremental."""
    vm = cutover_vm
    migration_id = start(vsphere, vm, openstack, target).migration_id
    run_sync(MigrationContext.read(vsphere, vm, openstack), settings)
    lab_json = os.path.join(os.environ["XMS_LAB_DIR"], "vsphere", "lab.json")
    child = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "cutover_child.py"), lab_json, CLOUDS, vm.name, settings.state_dir],
        env={**os.environ, "PYTHONPATH": COLLECTION_PARENT}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 600
        while not any(tool in command(pid) for pid in descendants(child.pid) for tool in CONVERTERS):
            if child.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the conversion never started: {child.communicate()[0][-3000:]}")
            time.sleep(0.5)
        time.sleep(2)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    state = store.load(openstack, migration_id)
    assert (state.cutover_step, state.converted, state.needs_full_resync) == ("final_sync", False, False)
    assert os.listdir(overlay.overlay_dir(settings.state_dir, migration_id))  # the killed run's overlays
    assert_volumes_equal_source(vsphere, vm, openstack, state)

    undone = rollback(MigrationContext.read(vsphere, vm, openstack), CutoverSettings(sync=settings))
    assert undone.steps_done == ["power_on_source", "phase_ready"]
    assert not os.path.exists(overlay.overlay_dir(settings.state_dir, migration_id))
    assert run_sync(MigrationContext.read(vsphere, vm, openstack), settings).kind == "incremental"
    assert_volumes_equal_source(vsphere, vm, openstack, store.load(openstack, migration_id))


@pytest.mark.parametrize("cutover_vm", ["lab-vm-2"], indirect=True)
def test_a_conversion_rerun_first_restores_the_volumes_a_stopped_commit_wrote(
    vsphere, cutover_vm, openstack, target, settings, monkeypatch
):
    """The one window in which a conversion writes the replicas: its commit. A stand-in for virt-v2v (a
    double, named as such: lab-vm-2 holds test patterns, no OS) writes 256 KiB into the boot disk's overlay
    with qemu-io, and the run is stopped right after the real commit, before the record says converted. The
    rerun copies the volumes whole from the stopped source before it converts again (the real virt-v2v, which
    fails on lab-vm-2 without writing): after it they equal the source."""
    vm = cutover_vm
    migration_id = start(vsphere, vm, openstack, target).migration_id
    run_sync(MigrationContext.read(vsphere, vm, openstack), settings)
    cutover = CutoverSettings(sync=settings, conversion=ConversionOptions(timeout_s=900, log_dir=settings.state_dir))

    def virt_v2v_double(devices, options, **kwargs):
        subprocess.run(["qemu-io", "-f", kwargs["fmt"], "-c", "write -P 0x5a 1M 256K", devices[0]], check=True,
                       capture_output=True)  # fmt: skip
        return ConversionResult(converted=True, skipped=False, duration_s=0.0, warnings=[], log=None)

    def killed_after(commit):
        def run(paths):
            commit(paths)
            raise KeyboardInterrupt("killed after the commit")  # what a kill -9 at this point leaves behind

        return run

    with monkeypatch.context() as patched:
        patched.setattr(cutover_module.virt_v2v, "convert_in_place", virt_v2v_double)
        patched.setattr(cutover_module.overlay, "commit", killed_after(overlay.commit))
        with pytest.raises(KeyboardInterrupt):
            run_cutover(MigrationContext.read(vsphere, vm, openstack), target, cutover)
    state = store.load(openstack, migration_id)
    assert (state.converted, state.needs_full_resync) == (False, True)
    with attach_for_write(openstack, state.disks[0].volume_id) as path, open(path, "rb") as volume:
        volume.seek(1 << 20)
        assert volume.read(256 << 10) == b"\x5a" * (256 << 10)  # the commit reached the volume
    with pytest.raises(ConversionError):
        run_cutover(MigrationContext.read(vsphere, vm, openstack), target, cutover)
    state = store.load(openstack, migration_id)
    assert state.history[-1].kind == "full_resync" and power_state(vsphere, vm) == "poweredOff"
    assert_volumes_equal_source(vsphere, vm, openstack, state)


@pytest.mark.parametrize("cutover_vm", ["lab-vm-1"], indirect=True)
def test_a_source_powered_on_again_between_cutover_runs_is_shut_down_and_synced_again(
    vsphere, cutover_vm, openstack, target, settings, instance_step_fails_once
):
    """The record says "shut down", the VM runs: the rerun reads the power state, shuts it down, syncs again."""
    vm = cutover_vm
    migration_id = start(vsphere, vm, openstack, target).migration_id
    run_sync(MigrationContext.read(vsphere, vm, openstack), settings)
    cutover = data_cutover(settings, instance_timeout=300)
    with pytest.raises(InstanceError):
        run_cutover(MigrationContext.read(vsphere, vm, openstack), target, cutover)
    assert store.load(openstack, migration_id).cutover_step == "converted"

    power_on(vsphere, vm)  # somebody starts the source again, and its guest writes
    disk_key = str(store.load(openstack, migration_id).disks[0].disk_key)
    written = lab_cmd("write", "lab-vm-1", disk_key, "4")["written"]
    rerun = run_cutover(MigrationContext.read(vsphere, vm, openstack), target, cutover)
    assert rerun.steps_done == ["shutdown", "final_sync", "converted", "instance", "validated", "completed"]
    assert any("ran again" in w for w in rerun.warnings)
    assert rerun.final_sync["bytes"] == sum(e.length for e in merge_extents(Extent(o, n) for o, n in written))
    assert power_state(vsphere, vm) == "poweredOff"
    assert store.load(openstack, migration_id).sync_count == 3


@pytest.mark.parametrize("cutover_vm", ["lab-vm-1"], indirect=True)
def test_a_failed_final_sync_leaves_the_source_off_in_cutover_and_says_what_to_run_next(
    vsphere, cutover_vm, openstack, target, settings, monkeypatch
):
    """Cinder puts a volume in error right after the shutdown (a real state, set at that moment).

    The guest wrote to that disk before it went down, so the final delta must write its volume
    (a disk with nothing to copy is never attached, and its volume's state would not matter)."""
    vm = cutover_vm
    migration_id = start(vsphere, vm, openstack, target).migration_id
    run_sync(MigrationContext.read(vsphere, vm, openstack), settings)
    disk = store.load(openstack, migration_id).disks[0]
    volume_id = disk.volume_id
    lab_cmd("write", "lab-vm-1", str(disk.disk_key), "4")
    admin = OpenStackClient.connect(cloud="xms-admin").conn.block_storage
    shut_down = cutover_module._source_stays_off

    def then_a_volume_fails(*args, **kwargs):
        shut_down(*args, **kwargs)
        admin.reset_volume_status(volume_id, status="error", attach_status=None, migration_status=None)

    monkeypatch.setattr(cutover_module, "_source_stays_off", then_a_volume_fails)
    cutover = data_cutover(settings, instance_timeout=300)
    with pytest.raises(WarmMigrationError) as err:
        run_cutover(MigrationContext.read(vsphere, vm, openstack), target, cutover)
    text = str(err.value)
    assert "source VM is off" in text and "state: rolled_back" in text and "last step done: shutdown" in text
    state = store.load(openstack, migration_id)
    assert (state.phase, state.cutover_step) == ("cutover", "shutdown") and state.last_error
    assert power_state(vsphere, vm) == "poweredOff" and state.downtime_s() is not None

    monkeypatch.undo()
    admin.reset_volume_status(volume_id, status="available", attach_status="detached", migration_status=None)
    resumed = run_cutover(MigrationContext.read(vsphere, vm, openstack), target, cutover)
    assert resumed.steps_done == ["final_sync", "converted", "instance", "validated", "completed"]
