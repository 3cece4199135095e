"""A test migration (both labs): a clone of the lab guest's replica converted, boot-checked and booted on a
test network while the guest writes and a sync runs; the replica stays equal to the source, and removing
the test leaves nothing behind. Bad input is refused before anything is created.
"""

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from ansible_collections.xms.warm_migration.plugins.module_utils.conversion.virt_v2v import ConversionOptions
from ansible_collections.xms.warm_migration.plugins.module_utils.migration import store
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.context import MigrationContext
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.errors import PreflightError
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.projection import HostTimes
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.rehearsal import (
    MigrationTestSettings,
    remove_test,
    run_test,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.sync import run_sync
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack import instance as os_instance
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack import volumes as os_volumes
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack.client import OpenStackClient
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere import inventory

from ..openstack.conftest import CLOUDS
from .conftest import Writer, assert_volumes_equal_source, power_state, reset_vm, start

HERE = os.path.dirname(os.path.abspath(__file__))
COLLECTION_PARENT = sys.modules["ansible_collections"].__path__[0].rsplit("/ansible_collections", 1)[0]

GUEST = "lab-vm-linux"


@pytest.fixture
def guest(vsphere, openstack):
    vm = inventory.find_vm(vsphere, name=GUEST)
    reset_vm(vsphere, vm, openstack)
    yield vm
    reset_vm(vsphere, vm, openstack)


def clones_of_test(openstack, migration_id):
    """The clones a test of the migration made (of its replicas)."""
    replicas = [d.volume_id for d in store.load(openstack, migration_id).disks]
    return os_volumes.find_test_clones(openstack, os_instance.TEST_TAG, migration_id, replicas)


def leftovers(openstack, migration_id):
    """What the test migration made that is still there: server, ports, clones."""
    server = os_instance.find_test_server(openstack, migration_id)
    ports = [p.id for p in openstack.conn.network.ports() if (p.name or "").startswith(f"xms-test-{migration_id}-")]
    clones = clones_of_test(openstack, migration_id)
    return ([server.id] if server else []) + ports + clones


def clones_available(openstack, migration_id):
    clones = clones_of_test(openstack, migration_id)
    return len(clones) == 2 and all(openstack.conn.block_storage.get_volume(c).status == "available" for c in clones)


def test_a_clone_of_the_replica_boots_while_the_guest_writes_and_syncs_go_on(
    vsphere, guest, openstack, target, settings
):
    migration_id = start(vsphere, guest, openstack, target).migration_id
    run_sync(MigrationContext.read(vsphere, guest, openstack), settings)
    data_disk = str(store.load(openstack, migration_id).disks[1].disk_key)
    conversion = ConversionOptions(timeout_s=1800, log_dir=settings.state_dir)
    test = MigrationTestSettings(
        sync=settings, network="lab-net-b", boot_check=True, boot_check_timeout=900, conversion=conversion
    )
    predicted = run_test(MigrationContext.read(vsphere, guest, openstack), test, check_mode=True)
    assert predicted.changed and predicted.actions == ["clone", "convert", "boot_check", "instance"]
    assert leftovers(openstack, migration_id) == []

    outcome = {}

    def test_in_background():
        outcome["done"] = run_test(MigrationContext.read(vsphere, guest, openstack), test)

    worker = threading.Thread(target=test_in_background, daemon=True)
    with Writer(GUEST, data_disk, 500_000):  # the guest writes its data disk throughout
        worker.start()
        while not clones_available(openstack, migration_id):
            time.sleep(1)
        time.sleep(10)  # the clones exist and the conversion runs: a sync of the replica goes on meanwhile
        own = OpenStackClient.connect(cloud="xms-lab")  # the test's thread has its own connection
        synced = run_sync(MigrationContext.read(vsphere, guest, own), settings)
        assert synced.kind == "incremental" and synced.bytes_copied > 0
        worker.join(1800)
    done = outcome["done"]
    assert done.instance["status"] == "ACTIVE" and done.conversion["converted"] and done.boot["passed"]
    # The guest's ens192 is pinned to the test port's MAC (never the source's), which the check heard from.
    test_macs = os_instance.test_macs(migration_id, len(done.instance["ports"]))
    assert done.conversion["pinned_names"] == {"ens192": test_macs[0]}
    assert done.boot["nics"][test_macs[0]]  # whichever of its frames came first
    assert [p["mac"] for p in done.instance["ports"]] == test_macs
    assert list(done.timings) == ["cloned", "converted", "boot_checked", "instance"]
    state = store.load(openstack, migration_id)
    assert state.test.result == "passed" and state.test.instance_id == done.instance["id"]
    assert state.test.timings == done.timings and state.phase.value == "ready" and not state.converted
    assert HostTimes(settings.state_dir).load()["conversion_s"] == done.timings["converted"]
    assert not any(p["mac"].startswith("00:50:56") for p in done.instance["ports"])  # never the source's MAC
    assert os_instance.find_server(openstack, migration_id) is None  # the migration itself has no instance
    assert power_state(vsphere, guest) == "poweredOn"

    again = run_test(MigrationContext.read(vsphere, guest, openstack), test)
    assert not again.changed
    # The replica was never touched by the test: after one more sync it equals the source.
    run_sync(MigrationContext.read(vsphere, guest, openstack), settings)
    assert_volumes_equal_source(vsphere, guest, openstack, store.load(openstack, migration_id))

    removed = remove_test(MigrationContext.read(vsphere, guest, openstack))
    assert removed.changed and leftovers(openstack, migration_id) == []
    assert store.load(openstack, migration_id).test.result == "removed"
    assert not remove_test(MigrationContext.read(vsphere, guest, openstack)).changed
    print(f"test migration of the lab guest: {done.timings}")


def clones_held_by_this_host(openstack, migration_id):
    """Both clones attached to this host (no server): the test migration is converting them."""
    clones = clones_of_test(openstack, migration_id)
    attachments = [a for c in clones for a in openstack.conn.block_storage.get_volume(c).attachments or []]
    return len(clones) == 2 and len(attachments) == 2 and not any(a.get("server_id") for a in attachments)


def test_a_test_killed_while_it_converts_is_removed_with_its_clones(vsphere, guest, openstack, target, settings):
    """The conversion host dies (kill -9 of the run and what it started) while the clones are attached to
    it: removing the test releases those attachments, and deletes the clones with the rest."""
    migration_id = start(vsphere, guest, openstack, target).migration_id
    run_sync(MigrationContext.read(vsphere, guest, openstack), settings)
    lab_json = os.path.join(os.environ["XMS_LAB_DIR"], "vsphere", "lab.json")
    child = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "rehearsal_child.py"), lab_json, CLOUDS, GUEST,
         settings.state_dir],
        env={**os.environ, "PYTHONPATH": COLLECTION_PARENT}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 600
        while not clones_held_by_this_host(openstack, migration_id):
            if child.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the test migration never held its clones: {child.communicate()[0][-3000:]}")
            time.sleep(1)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    assert leftovers(openstack, migration_id)  # the server was not made yet; the clones are held

    removed = remove_test(MigrationContext.read(vsphere, guest, openstack))
    assert removed.changed and leftovers(openstack, migration_id) == []


@pytest.mark.parametrize(
    "change, parameter, words",
    [
        ({"network": "no-such-net"}, "test_network", "network 'no-such-net' does not exist"),
        ({"subnet": "lab-net-a-subnet"}, "test_subnet", "is not on network 'lab-net-b'"),
        ({"flavor": "no-such-flavor"}, "flavor", "flavor 'no-such-flavor' does not exist"),
        ({"key_name": "no-such-key"}, "key_name", "key pair 'no-such-key' does not exist"),
    ],
)
def test_bad_input_is_refused_before_anything_is_created(
    vsphere, guest, openstack, target, settings, change, parameter, words
):
    migration_id = start(vsphere, guest, openstack, target).migration_id
    run_sync(MigrationContext.read(vsphere, guest, openstack), settings)
    test = MigrationTestSettings(sync=settings, network="lab-net-b", conversion=ConversionOptions(skip=True))
    for key, value in change.items():
        setattr(test, key, value)
    with pytest.raises(PreflightError) as err:
        run_test(MigrationContext.read(vsphere, guest, openstack), test)
    assert err.value.parameter == parameter and words in str(err.value)
    assert leftovers(openstack, migration_id) == [] and store.load(openstack, migration_id).test is None


def test_a_project_without_volume_quota_for_the_clones_is_refused(vsphere, guest, openstack, target, settings):
    """The project's gigabytes quota set (by the lab's admin) to what it uses: no room for the clones."""
    migration_id = start(vsphere, guest, openstack, target).migration_id
    run_sync(MigrationContext.read(vsphere, guest, openstack), settings)
    project = openstack.conn.current_project_id
    admin = OpenStackClient.connect(cloud="xms-admin").conn.block_storage
    quota = admin.get_quota_set(project, usage=True)
    used = int((quota.usage or {}).get("gigabytes", 0)) + int((quota.reservation or {}).get("gigabytes", 0))
    limit = quota.gigabytes
    admin.update_quota_set(project, gigabytes=used)
    try:
        test = MigrationTestSettings(sync=settings, network="lab-net-b", conversion=ConversionOptions(skip=True))
        with pytest.raises(PreflightError) as err:
            run_test(MigrationContext.read(vsphere, guest, openstack), test)
        assert "quota gigabytes" in str(err.value) and "too little" in str(err.value)
        assert leftovers(openstack, migration_id) == []
    finally:
        admin.update_quota_set(project, gigabytes=limit)


def test_removing_a_test_keeps_what_others_made_of_its_clones(vsphere, guest, openstack, target, settings):
    """Somebody snapshotted a clone, and made a volume carrying the test's tag (as Cinder's clone of a clone
    does): the removal refuses while the snapshot exists, then removes the test's own clones and never theirs."""
    migration_id = start(vsphere, guest, openstack, target).migration_id
    run_sync(MigrationContext.read(vsphere, guest, openstack), settings)
    test = MigrationTestSettings(sync=settings, network="lab-net-b", conversion=ConversionOptions(skip=True))
    run_test(MigrationContext.read(vsphere, guest, openstack), test)
    storage = openstack.conn.block_storage
    clones = clones_of_test(openstack, migration_id)
    # The test's server went first (someone deleted it): the clones are available, and this lab's NFS back-end
    # snapshots only an available volume (an attached one needs Nova's assisted snapshots).
    os_instance.delete_test_instance(openstack, migration_id, 300)
    storage.wait_for_status(storage.get_volume(clones[0]), "available", wait=300)
    theirs = storage.create_volume(size=1, name="their-volume", metadata={os_instance.TEST_TAG: migration_id})
    storage.wait_for_status(theirs, "available", wait=300)
    snapshot = storage.create_snapshot(volume_id=clones[0], name="their-snapshot")
    storage.wait_for_status(snapshot, "available", wait=300)
    try:
        with pytest.raises(PreflightError) as err:
            remove_test(MigrationContext.read(vsphere, guest, openstack))
        assert snapshot.id in str(err.value) and "Nothing was removed" in str(err.value)
        assert sorted(clones_of_test(openstack, migration_id)) == sorted(clones)
        storage.delete_snapshot(snapshot.id)
        storage.wait_for_delete(snapshot, wait=300)
        removed = remove_test(MigrationContext.read(vsphere, guest, openstack))
        assert {f"volume:{c}" for c in clones} <= set(removed.removed)
        assert f"volume:{theirs.id}" not in removed.removed and storage.get_volume(theirs.id).status == "available"
        assert leftovers(openstack, migration_id) == []
    finally:
        storage.delete_volume(theirs.id, ignore_missing=True, cascade=True)


def test_replicas_nova_would_reformat_are_refused_before_anything_is_created(vsphere, openstack, target, settings):
    """Encrypted replicas that Cinder keeps as qcow2 files (LUKS inside): Nova's libvirt driver (Zed) would
    luksFormat their clones at the first attach (docs/cutover.md). Asked of the replicas under the hold."""
    vm = inventory.find_vm(vsphere, name="lab-vm-2")
    reset_vm(vsphere, vm, openstack)
    try:
        encrypted = dataclasses.replace(target, volume_type="standard-ssd-encrypted")
        migration_id = start(vsphere, vm, openstack, encrypted).migration_id
        run_sync(MigrationContext.read(vsphere, vm, openstack), settings)
        test = MigrationTestSettings(sync=settings, network="lab-net-b", conversion=ConversionOptions(skip=True))
        with pytest.raises(PreflightError) as err:
            run_test(MigrationContext.read(vsphere, vm, openstack), test)
        assert err.value.parameter == "volume_type" and "cryptsetup" in str(err.value)
        assert leftovers(openstack, migration_id) == [] and store.load(openstack, migration_id).test is None
    finally:
        reset_vm(vsphere, vm, openstack)
