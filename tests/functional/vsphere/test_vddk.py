"""The collection's VDDK reader (nbdkit's Python host) over the lab's VDDK (lab/vsphere/vddk, a test double
of VMware's libvixDiskLib serving the lab's real snapshots): data, holes, refusals, connections, a SIGKILL."""

import contextlib
import copy
import ctypes
import dataclasses
import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import nbd
import pytest

from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere import cbt, datapath, inventory, vddk_reader
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere.cbt import SnapshotView
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere.errors import DataPathError

XMS = datapath.Reader.XMS
HERE = os.path.dirname(os.path.abspath(__file__))
CBT = os.path.join(HERE, "..", "..", "..", "lab", "vsphere", "cbt.py")
CHUNK = vddk_reader.CHUNK_SECTORS * vddk_reader.SECTOR


@pytest.fixture(scope="module")
def lab_vddk():
    libdir = os.path.join(os.environ.get("XMS_LAB_DIR", "/var/lib/xms-lab"), "vsphere", "vddk")
    assert os.path.exists(os.path.join(libdir, "lib64", "libvixDiskLib.so.8")), "the lab's VDDK is built by up.sh"
    return libdir


def sha256_and_holes(uri: str, size: int):
    """The disk's SHA-256 and the (64 KiB) chunks the server reports as holes."""
    handle = nbd.NBD()
    handle.add_meta_context("base:allocation")
    handle.connect_uri(uri)
    digest, holes, reached = hashlib.sha256(), set(), [0]
    for offset in range(0, size, 4 << 20):
        digest.update(handle.pread(min(4 << 20, size - offset), offset))

    def collect(context, offset, entries, _err):
        if context == "base:allocation":
            for length, flags in zip(entries[::2], entries[1::2]):
                if flags & nbd.STATE_HOLE:
                    holes.update(range((offset + CHUNK - 1) // CHUNK, (offset + length) // CHUNK))
                offset += length
            reached[0] = offset
        return 0

    while reached[0] < size:
        handle.block_status(size - reached[0], reached[0], collect)
    handle.shutdown()
    return digest.hexdigest(), holes


@contextlib.contextmanager
def lab_view(vm_name: str, snap_moref: str, key: int, tmp_path):
    """qemu-nbd on the lab's own snapshot of the disk (lab/vsphere/cbt.py view): the yardstick."""
    sock = str(tmp_path / "view.sock")
    proc = subprocess.Popen([sys.executable, CBT, "view", vm_name, snap_moref, str(key), sock])
    try:
        while not os.path.exists(sock):
            assert proc.poll() is None, "the lab's view did not start"
            time.sleep(0.02)
        yield f"nbd+unix:///?socket={sock}"
    finally:
        proc.kill()
        proc.wait()


def test_a_disk_read_through_the_reader_is_the_snapshot_with_its_holes(client, lab_vddk, tmp_path):
    vm = inventory.find_vm(client, name="lab-vm-1")
    disk = inventory.inventory(client, vm).disks[0]
    with cbt.sync_snapshot(client, vm) as snap:
        with datapath.open_disk(client, vm, snap, disk, vddk_libdir=lab_vddk, reader=XMS) as uri:
            read = sha256_and_holes(uri, disk.capacity)
        with lab_view("lab-vm-1", snap.moref, disk.key, tmp_path) as view:
            direct = sha256_and_holes(view, disk.capacity)
    assert read[0] == direct[0]
    assert read[1] == direct[1] and read[1]  # a sparse disk: the reader reports the image's real holes


@pytest.mark.parametrize(
    ("change", "parameter", "words"),
    [
        ("password", "password", "Insufficient permissions"),
        ("thumbprint", "hostname", "thumbprint does not match"),
        ("snapshot", None, "the snapshot was not found"),
        ("file", None, "The file was not found"),
    ],
)
def test_refusals_name_what_to_fix_before_a_byte_moves(client, lab_vddk, change, parameter, words):
    vm = inventory.find_vm(client, name="lab-vm-2")
    disk = inventory.inventory(client, vm).disks[0]
    other = copy.copy(client)
    if change == "password":
        other.conn = dataclasses.replace(client.conn, password="not-the-password")
    if change == "thumbprint":
        other.thumbprint = ":".join(["AB"] * 20)
    if change == "file":
        disk = dataclasses.replace(disk, key=-1, backing_file="[LocalDS_0] elsewhere/other.vmdk")
    with cbt.sync_snapshot(client, vm) as snap:
        if change == "snapshot":  # one vCenter does not have (removed before the reader came)
            snap = SnapshotView(ref=type(snap.ref)("snapshot-9999", snap.ref._stub), name="gone")
        with pytest.raises(DataPathError) as err, datapath.open_disk(other, vm, snap, disk, vddk_libdir=lab_vddk,
                                                                     reader=XMS):  # fmt: skip
            pytest.fail("served")
    assert err.value.parameter == parameter and words in str(err.value) and err.value.hint
    assert "not-the-password" not in str(err.value) and client.conn.password not in str(err.value)


def test_several_connections_read_one_disk_side_by_side(client, lab_vddk):
    """Each NBD connection is its own VDDK handle (the lab's VDDK starts a server per handle: they are counted)."""
    vm = inventory.find_vm(client, name="lab-vm-1")
    disk = inventory.inventory(client, vm).disks[0]
    with cbt.sync_snapshot(client, vm) as snap, datapath.open_disk(client, vm, snap, disk, vddk_libdir=lab_vddk,
                                                                   reader=XMS) as uri:  # fmt: skip
        handles = []
        for _connection in range(4):
            handle = nbd.NBD()
            handle.connect_uri(uri)
            handles.append(handle)
        nbdkit = int(subprocess.run(["pgrep", "-f", uri.split("socket=")[1]], capture_output=True, text=True,
                                    check=True).stdout.split()[0])  # fmt: skip
        servers = subprocess.run(["pgrep", "-P", str(nbdkit), "qemu-nbd"], capture_output=True, text=True, check=False)
        assert len(servers.stdout.split()) == 4
        results = {}
        threads = [threading.Thread(target=lambda i=i, h=h: results.update({i: h.pread(4 << 20, i * (4 << 20))}))
                   for i, h in enumerate(handles)]  # fmt: skip
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert b"".join(results[i] for i in range(4)) == handles[0].pread(16 << 20, 0)
        for handle in handles:
            handle.shutdown()


def test_a_snapshot_removed_while_the_reader_has_it_open_fails_the_next_read(client, lab_vddk):
    vm = inventory.find_vm(client, name="lab-vm-2")
    disk = inventory.inventory(client, vm).disks[0]
    ref = client.wait_task(vm.CreateSnapshot_Task("xms-test-removed", "", False, False), "snapshot")
    snap = SnapshotView(ref=ref, name="xms-test-removed")
    snap.backing_files[disk.key] = disk.backing_file
    with datapath.open_disk(client, vm, snap, disk, vddk_libdir=lab_vddk, reader=XMS) as uri:
        handle = nbd.NBD()
        handle.connect_uri(uri)
        assert len(handle.pread(1 << 20, 0)) == 1 << 20
        client.wait_task(ref.RemoveSnapshot_Task(removeChildren=False), "removing the snapshot")
        with pytest.raises(nbd.Error):
            handle.pread(1 << 20, 1 << 20)


CHILD = textwrap.dedent("""
    import json, os, sys, time
    from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere import cbt, datapath, inventory
    from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere.client import (
        VSphereClient, VSphereConnection)
    lab, libdir = json.load(open(sys.argv[1])), sys.argv[2]
    conn = VSphereConnection(hostname=lab["hostname"], username=lab["username"], password=lab["password"],
                             port=lab["port"], validate_certs=False)
    with VSphereClient.connect(conn) as client:
        vm = inventory.find_vm(client, name="lab-vm-1")
        disk = inventory.inventory(client, vm).disks[0]
        with cbt.sync_snapshot(client, vm) as snap:
            with datapath.open_disk(client, vm, snap, disk, vddk_libdir=libdir, reader=datapath.Reader.XMS) as uri:
                print(uri, flush=True)
                time.sleep(600)
""")


def test_a_reader_whose_run_is_killed_leaves_no_process_and_no_secret(client, lab, lab_vddk):
    lab_json = os.path.join(os.environ.get("XMS_LAB_DIR", "/var/lib/xms-lab"), "vsphere", "lab.json")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.Popen([sys.executable, "-c", CHILD, lab_json, lab_vddk], stdout=subprocess.PIPE, text=True,
                             env=env)  # fmt: skip
    uri = child.stdout.readline().strip()
    workdir = os.path.dirname(uri.split("socket=")[1])
    nbdkit = subprocess.run(["pgrep", "-f", workdir], capture_output=True, text=True, check=False).stdout.split()
    assert nbdkit, "nbdkit serves"
    readers = subprocess.run(["pgrep", "-P", nbdkit[0]], capture_output=True, text=True, check=False).stdout.split()
    assert readers, "its first VDDK handle is open (the lab's VDDK reads it through a qemu-nbd of its own)"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()

    def running():
        return subprocess.run(["pgrep", "-f", workdir], capture_output=True, check=False).stdout or any(
            os.path.exists(f"/proc/{pid}") for pid in readers
        )

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and running():
        time.sleep(0.1)
    assert not running()  # nbdkit and the readers of its VDDK handles
    left = [os.path.join(workdir, name) for name in os.listdir(workdir)]
    for path in filter(os.path.isfile, left):  # what a SIGKILL leaves: the reader's copy and the log, no password
        with open(path, "rb") as handle:
            assert lab["password"].encode() not in handle.read(), path
    subprocess.run(["rm", "-rf", workdir], check=True)
    cbt.remove_orphan_snapshots(client, inventory.find_vm(client, name="lab-vm-1"))  # as the next sync would


def test_the_readers_structures_have_the_published_layout(tmp_path):
    """The ctypes structures of the reader and the C header of the lab's VDDK (the published VDDK 6.7 layout)."""
    header = os.path.join(HERE, "..", "..", "..", "lab", "vsphere", "vddk")
    source = tmp_path / "layout.c"
    source.write_text(
        textwrap.dedent("""
        #include <stddef.h>
        #include <stdio.h>
        #include "vixDiskLib.h"
        int main(void) {
          printf("%zu %zu %zu %zu %zu %zu\\n", sizeof(VixDiskLibConnectParams),
                 offsetof(VixDiskLibConnectParams, credType), offsetof(VixDiskLibConnectParams, port),
                 offsetof(VixDiskLibConnectParams, specType), sizeof(VixDiskLibInfo), sizeof(VixDiskLibBlockList));
          return 0;
        }
    """)
    )
    subprocess.run(["gcc", "-I", header, "-o", str(tmp_path / "layout"), str(source)], check=True)
    c_sizes = subprocess.run([str(tmp_path / "layout")], capture_output=True, text=True, check=True).stdout.split()
    cp = vddk_reader.ConnectParams
    ours = [ctypes.sizeof(cp), cp.credType.offset, cp.port.offset, cp.specType.offset,
            ctypes.sizeof(vddk_reader.DiskInfo), ctypes.sizeof(vddk_reader.BlockList)]  # fmt: skip
    assert [int(n) for n in c_sizes] == ours
