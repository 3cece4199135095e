"""The NFS reader (reader: nfs) against the lab's NFS datastore: lab-vm-nfs's disks are vmdk descriptors and flat
extents in the datastore's directory, a snapshot freezes the file below a new delta, and the conversion host reads
the datastore through a read-only mount (lab/vsphere/README.md). No VDDK: every read here names a vddk_libdir that
does not exist, and the lab's VDDK logs no read."""

import hashlib
import os
import sys

import pytest

from ansible_collections.xms.warm_migration.plugins.module_utils.migration import store
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.context import MigrationContext
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.initialize import (
    NetworkMapping,
    TargetSettings,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.settings import SyncSettings
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.sync import run_sync
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack import volumes as os_volumes
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack.attach import attach_for_write
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere import cbt, datapath, inventory
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere.errors import DataPathError

from ..vsphere.conftest import LAB_DIR, VDDK_LIBDIR, lab_cmd
from .conftest import Writer, delete_migration, sha256_of_target, start, wave_playbooks

NFS_VM = "lab-vm-nfs"
MOUNT = os.path.join(LAB_DIR, "nfs-mnt", "nfs-ds0")  # up.sh's read-only mount of the datastore
MOUNTS = {"nfs-ds0": MOUNT}
NO_VDDK = "/nonexistent/vmware-vix-disklib-distrib"
READS_LOG = os.path.join(LAB_DIR, "vddk", "reads.log")  # the lab's VDDK logs every read here while it exists


@pytest.fixture
def target():
    """lab-vm-nfs's NIC is on the standard port group."""
    return TargetSettings(volume_type="standard-ssd", availability_zone="az1",
                          network_map=[NetworkMapping(source="VM Network", network="lab-net-a")])  # fmt: skip


@pytest.fixture
def nfs_vm(vsphere, openstack):
    """lab-vm-nfs with no migration and no snapshot, and the lab's VDDK watching for reads."""
    vm = inventory.find_vm(vsphere, name=NFS_VM)
    delete_migration(openstack, MigrationContext.read(vsphere, vm).migration_id)
    with open(READS_LOG, "w"):
        pass
    yield vm
    os.unlink(READS_LOG)
    if inventory.inventory(vsphere, vm).snapshot_count:
        vsphere.wait_task(vm.RemoveAllSnapshots_Task(), "removing the test's snapshots")
    delete_migration(openstack, MigrationContext.read(vsphere, vm).migration_id)


def live_sha256(key, size):
    """What the guest sees of disk ``key`` now (the lab's live export, through its whole vmdk chain)."""
    return sha256_of_target(f"nbd+unix:///live-{key}?socket={os.path.join(LAB_DIR, 'qsd', NFS_VM, 'nbd.sock')}", size)


def file_sha256(path):
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def test_the_nfs_reader_serves_the_frozen_file_while_the_guest_writes_its_delta(vsphere, nfs_vm):
    vm = nfs_vm
    disk = inventory.inventory(vsphere, vm).disks[0]
    assert disk.backing_file == "[nfs-ds0] lab-vm-nfs/lab-vm-nfs.vmdk" and disk.datastore == "nfs-ds0"
    flat = os.path.join(MOUNT, "lab-vm-nfs", "lab-vm-nfs-flat.vmdk")
    before = live_sha256(disk.key, disk.capacity)
    with cbt.sync_snapshot(vsphere, vm) as snap:
        assert snap.backing_files[disk.key] == disk.backing_file  # the snapshot's own backing: the frozen file
        now = inventory.inventory(vsphere, vm).disks[0].backing_file
        assert now == "[nfs-ds0] lab-vm-nfs/lab-vm-nfs-000001.vmdk"  # the VM writes to the new delta
        frozen = file_sha256(flat)
        server = datapath.DiskServer(vsphere, vm, snap, disk, vddk_libdir=NO_VDDK, nfs_mounts=MOUNTS)
        try:
            assert server.choice.reader is datapath.Reader.NFS and "no VDDK" in server.choice.why  # auto
            uri = server.serving()
            assert sha256_of_target(uri, disk.capacity) == before
            lab_cmd("write", NFS_VM, str(disk.key), "8")  # the running guest keeps writing
            assert sha256_of_target(uri, disk.capacity) == before
            assert file_sha256(flat) == frozen
        finally:
            server.close()
        after = live_sha256(disk.key, disk.capacity)
        assert after != before
    # The removal merges the delta into the file below (ESXi's consolidation): the disk is one file again.
    assert inventory.inventory(vsphere, vm).disks[0].backing_file == disk.backing_file
    assert not [f for f in os.listdir(os.path.join(MOUNT, "lab-vm-nfs")) if "-0000" in f]
    assert live_sha256(disk.key, disk.capacity) == after
    with open(READS_LOG) as log:
        assert log.read() == ""  # nothing went through VDDK


def test_an_operators_older_snapshot_is_read_through_its_delta(vsphere, nfs_vm):
    """A VM that already has a snapshot (an operator's, kept through the migration): the sync's snapshot freezes
    the operator's delta, and the reader reads the chain below it, descriptor by descriptor; the lab's VDDK reads
    the same point in time."""
    vm = nfs_vm
    disk = inventory.inventory(vsphere, vm).disks[1]
    vsphere.wait_task(vm.CreateSnapshot_Task("before-patching", "an operator's", False, False), "operator snapshot")
    lab_cmd("write", NFS_VM, str(disk.key), "6")
    before = live_sha256(disk.key, disk.capacity)
    with cbt.sync_snapshot(vsphere, vm) as snap:
        assert snap.backing_files[disk.key] == "[nfs-ds0] lab-vm-nfs/lab-vm-nfs_1-000001.vmdk"
        with datapath.open_disk(vsphere, vm, snap, disk, vddk_libdir=NO_VDDK, reader=datapath.Reader.NFS,
                                nfs_mounts=MOUNTS) as uri:  # fmt: skip
            lab_cmd("write", NFS_VM, str(disk.key), "4")
            assert sha256_of_target(uri, disk.capacity) == before
        # With VDDK on the host, auto takes a VDDK reader: the same point in time, from the same frozen file.
        with datapath.open_disk(vsphere, vm, snap, disk, vddk_libdir=VDDK_LIBDIR) as uri:
            assert sha256_of_target(uri, disk.capacity) == before
    assert inventory.inventory(vsphere, vm).disks[1].backing_file.endswith("lab-vm-nfs_1-000001.vmdk")


def test_a_seed_and_incrementals_through_the_nfs_reader_equal_the_source_while_the_guest_writes(
    vsphere, openstack, nfs_vm, target, tmp_path
):
    vm = nfs_vm
    settings = SyncSettings(state_dir=str(tmp_path / "state"), vddk_libdir=NO_VDDK, reader=datapath.Reader.NFS,
                            nfs_mounts=MOUNTS)  # fmt: skip
    init = start(vsphere, vm, openstack, target, vddk_libdir=NO_VDDK, reader=datapath.Reader.NFS, nfs_mounts=MOUNTS)
    assert [c["name"] for c in init.checks][:2] == ["source", "nfs"] and "lab-vm-nfs-flat" not in str(init.checks)
    disks = inventory.inventory(vsphere, vm).disks
    with Writer(NFS_VM, str(disks[0].key), 1_000_000):
        assert run_sync(MigrationContext.read(vsphere, vm, openstack), settings).kind == "seed"
        for _sync in range(2):
            assert run_sync(MigrationContext.read(vsphere, vm, openstack), settings).kind == "incremental"
    lab_cmd("write", NFS_VM, str(disks[1].key), "5")
    outcome = run_sync(MigrationContext.read(vsphere, vm, openstack), settings)  # the guest is quiet now
    assert outcome.kind == "incremental" and outcome.bytes_copied > 0
    assert_volumes_equal_live(vsphere, vm, openstack)


def assert_volumes_equal_live(vsphere, vm, openstack):
    """Every volume equals what the (quiet) guest sees of its disk, and nothing was read through VDDK."""
    state = store.load(openstack, MigrationContext.read(vsphere, vm).migration_id)
    for disk in inventory.inventory(vsphere, vm).disks:
        volume = next(d for d in state.disks if d.disk_key == disk.key)
        with attach_for_write(openstack, volume.volume_id) as path:
            assert sha256_of_target(path, disk.capacity) == live_sha256(disk.key, disk.capacity), disk.label
    with open(READS_LOG) as log:
        assert log.read() == ""


def test_the_wave_playbooks_seed_and_sync_with_reader_nfs_and_no_vddk(vsphere, openstack, nfs_vm, lab, tmp_path):
    playbook = wave_playbooks(lab, tmp_path, {"wave1": {
        "hosts": {NFS_VM: {}},
        "vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                 "warm_migration_volume_type": "standard-ssd", "warm_migration_availability_zone": "az1",
                 "warm_migration_network_map": [{"source": "VM Network", "network": "lab-net-a"}]},
    }}, {"state_dir": str(tmp_path / "state"), "vddk_libdir": NO_VDDK, "reader": "nfs",
         "nfs_mounts": MOUNTS})  # fmt: skip
    playbook("seed")
    lab_cmd("write", NFS_VM, str(inventory.inventory(vsphere, nfs_vm).disks[0].key), "6")
    playbook("sync")
    state = store.load(openstack, MigrationContext.read(vsphere, nfs_vm).migration_id)
    assert state.seeded and state.sync_count == 2 and state.bytes_incr > 0
    assert_volumes_equal_live(vsphere, nfs_vm, openstack)


@pytest.mark.parametrize(
    ("vm_name", "mounts", "parameter", "words"),
    [
        ("lab-vm-1", MOUNTS, "reader", "on datastore 'LocalDS_0', which is not NFS"),
        (NFS_VM, {}, "nfs_mounts", "could not mount datastore 'nfs-ds0'"),  # this kernel has no NFS client
        (NFS_VM, {"nfs-ds0": LAB_DIR}, "nfs_mounts", "has no file lab-vm-nfs/lab-vm-nfs.vmdk"),
    ],
)  # fmt: skip
def test_what_the_nfs_reader_cannot_read_is_refused_before_anything(vsphere, openstack, target, tmp_path, vm_name,
                                                                    mounts, parameter, words):  # fmt: skip
    """Preflight refuses before a volume exists, and so does a sync's reader before a byte moves."""
    vm = inventory.find_vm(vsphere, name=vm_name)
    migration_id = MigrationContext.read(vsphere, vm).migration_id
    delete_migration(openstack, migration_id)
    with pytest.raises(Exception) as err:
        start(vsphere, vm, openstack, target, vddk_libdir=NO_VDDK, reader=datapath.Reader.NFS, nfs_mounts=mounts,
              state_dir=str(tmp_path / "state"))  # fmt: skip
    assert err.value.parameter == parameter and words in str(err.value) and "Nothing was created" in str(err.value)
    assert os_volumes.find_volumes(openstack, migration_id) == []
    disk = inventory.inventory(vsphere, vm).disks[0]
    with cbt.sync_snapshot(vsphere, vm) as snap, pytest.raises(DataPathError) as refused:
        datapath.DiskServer(vsphere, vm, snap, disk, vddk_libdir=NO_VDDK, reader=datapath.Reader.NFS,
                            nfs_mounts=mounts, state_dir=str(tmp_path / "state"))  # fmt: skip
    assert refused.value.parameter == parameter and words in str(refused.value)
