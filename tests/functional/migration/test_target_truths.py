"""The target as production has it: an encrypted volume type with Barbican, a replica someone snapshotted.

The plaintext of an encrypted replica is checked outside the collection: the key comes from
Barbican through openstacksdk directly (as the project's member: the secret is the project's),
the volume file is read on the Cinder back-end with ``qemu-img``, never through the code under test.
"""

import glob
import os
import subprocess
import time

import nbd
import openstack as sdk
import pytest

from ansible_collections.xms.warm_migration.plugins.module_utils.migration import store
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.context import MigrationContext
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.sync import run_sync
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack.attach import attach_for_write
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere import cbt, datapath, inventory

from ..vsphere.conftest import VDDK_LIBDIR
from .conftest import SOURCE_VM, assert_volumes_equal_source, lab_cmd, start

MiB = 1 << 20
MARKER = "XMS-LAB-PLAINTEXT-7c1e"
BACKEND = "/srv/xms-lab"  # the lab's Cinder NFS shares (lab/openstack/up.sh)


def member():
    return sdk.connect(cloud="xms-lab")


def volume_file(volume_id):
    """The active file of a volume on the lab's back-end (a snapshot's overlay when there is one)."""
    files = sorted(glob.glob(f"{BACKEND}/cinder-*/volume-{volume_id}*"), key=os.path.getmtime)
    assert files, f"volume {volume_id} has no file on the lab's back-ends"
    return files[-1]


def source_image(vsphere, vm, disk_key, path):
    """The disk as of a fresh snapshot, into a raw file."""
    disk = {d.key: d for d in inventory.inventory(vsphere, vm).disks}[disk_key]
    with (
        cbt.sync_snapshot(vsphere, vm, purpose="verification") as snap,
        datapath.open_disk(vsphere, vm, snap, disk, vddk_libdir=VDDK_LIBDIR) as uri,
    ):
        handle = nbd.NBD()
        handle.connect_uri(uri)
        with open(path, "wb") as out:
            for offset in range(0, disk.capacity, 8 * MiB):
                out.write(handle.pread(min(8 * MiB, disk.capacity - offset), offset))
        handle.shutdown()
    return disk.capacity


@pytest.fixture
def encrypted(target):
    target.volume_type = "standard-ssd-encrypted"
    return target


def test_an_encrypted_volume_type_holds_the_source_in_plaintext_only_under_the_clouds_key(
    vsphere, source, openstack, encrypted, settings, tmp_path
):
    migration_id = start(vsphere, source, openstack, encrypted).migration_id
    state = store.load(openstack, migration_id)
    key = str(state.disks[0].disk_key)
    lab_cmd("mark", SOURCE_VM, key, str(5 * MiB), "copied-by-the-seed")
    assert run_sync(MigrationContext.read(vsphere, source, openstack), settings).kind == "seed"
    lab_cmd("mark", SOURCE_VM, key, str(7 * MiB), MARKER)  # a plaintext the guest writes
    lab_cmd("zero", SOURCE_VM, key, str(5 * MiB), str(64 << 10))  # and data the seed copied, trimmed
    assert run_sync(MigrationContext.read(vsphere, source, openstack), settings).kind == "incremental"

    keyfile = tmp_path / "passphrase"
    for disk in store.load(openstack, migration_id).disks:
        volume = member().block_storage.get_volume(disk.volume_id)
        assert volume.encryption_key_id, "the lab's encrypted type made an unencrypted volume"
        secret = member().key_manager.get_secret(volume.encryption_key_id).payload
        keyfile.write_text(secret.hex())
        os.chmod(keyfile, 0o600)
        raw = str(tmp_path / f"source-{disk.disk_key}.raw")
        source_image(vsphere, source, disk.disk_key, raw)
        backend = volume_file(disk.volume_id)
        done = subprocess.run(
            ["qemu-img", "compare", "--object", f"secret,id=k,file={keyfile}", "--image-opts",
             f"driver=qcow2,encrypt.key-secret=k,file.filename={backend}", f"driver=raw,file.filename={raw}"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert done.returncode == 0, f"disk {disk.disk_key}: {done.stdout}{done.stderr}"
        with open(backend, "rb") as handle:
            assert MARKER.encode() not in handle.read(), "plaintext of the guest on the back-end"
    with open(tmp_path / f"source-{key}.raw", "rb") as handle:  # the comparison covered the marker and the trim
        data = handle.read(8 * MiB)
    assert data[5 * MiB : 5 * MiB + (64 << 10)] == bytes(64 << 10) and MARKER.encode() in data[7 * MiB :]


def test_a_replica_snapshotted_in_cinder_is_synced_into_its_qcow2_overlay(vsphere, source, openstack, target, settings):
    """Cinder's NFS driver makes a snapshot's volume file the backing of a new qcow2 active file."""
    migration_id = start(vsphere, source, openstack, target).migration_id
    run_sync(MigrationContext.read(vsphere, source, openstack), settings)
    disk = store.load(openstack, migration_id).disks[0]
    before = volume_file(disk.volume_id)
    snapshot = openstack.conn.block_storage.create_snapshot(volume_id=disk.volume_id, name="someones-backup")
    deadline = time.monotonic() + 120
    while openstack.conn.block_storage.get_snapshot(snapshot.id).status != "available":
        assert time.monotonic() < deadline, "the Cinder snapshot did not become available"
        time.sleep(1)
    assert volume_file(disk.volume_id) != before  # the active file is now the qcow2 overlay
    with open(before, "rb") as handle:
        snapshot_data = handle.read()

    lab_cmd("write", SOURCE_VM, str(disk.disk_key), "20")
    lab_cmd("mark", SOURCE_VM, str(disk.disk_key), str(MiB), MARKER)
    assert run_sync(MigrationContext.read(vsphere, source, openstack), settings).kind == "incremental"
    assert_volumes_equal_source(vsphere, source, openstack, store.load(openstack, migration_id))
    with open(before, "rb") as handle:
        assert handle.read() == snapshot_data, "the sync wrote into the snapshot's data"


def test_the_volume_past_its_disks_end_reads_zero_after_a_seed(vsphere, source, openstack, target, settings):
    """Volumes come in whole GiB: a 48 MiB disk's volume has 976 MiB past the disk that no copy writes. A reused
    volume (old bytes written there first, as a block back-end that does not zero would show) reads zero there
    after the seed, as the guest will see it once its instance boots."""
    migration_id = start(vsphere, source, openstack, target).migration_id
    disk = store.load(openstack, migration_id).disks[0]
    with attach_for_write(openstack, disk.volume_id) as path, open(path, "r+b") as volume:
        volume.seek(0, os.SEEK_END)
        end = volume.tell()
        assert end > disk.capacity + (2 << 20), "the lab disk fills its volume: nothing to show"
        for offset in (disk.capacity, disk.capacity + (1 << 20), end - 4096):
            volume.seek(offset)
            volume.write(b"\xa5" * 4096)
    run_sync(MigrationContext.read(vsphere, source, openstack), settings)
    with attach_for_write(openstack, disk.volume_id) as path, open(path, "rb") as volume:
        for offset in (disk.capacity, disk.capacity + (1 << 20), end - 4096):
            volume.seek(offset)
            assert volume.read(4096) == bytes(4096), offset
    assert_volumes_equal_source(vsphere, source, openstack, store.load(openstack, migration_id))
