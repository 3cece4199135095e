"""The NFS reader's pieces that need no vCenter: datastore paths, where a datastore is mounted, and
qemu-nbd serving a vmdk chain laid out as ESXi lays one out on an NFS datastore (descriptor and flat
extent, the delta of an older snapshot above it) read-only, byte for byte."""

import os
import subprocess

import nbd
import pytest

from ansible_collections.xms.warm_migration.plugins.module_utils.common.waiter import wait_for
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere import datapath, nfs_reader
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere.errors import DataPathError

MiB = 1 << 20
DS = nfs_reader.NfsDatastore("nfs-ds01", "127.0.0.1", "/no/such/export", "3")


def test_a_datastore_path_splits_into_datastore_and_file():
    assert nfs_reader.split_datastore_path("[nfs-ds01] web01/web01_1-000002.vmdk") == (
        "nfs-ds01",
        "web01/web01_1-000002.vmdk",
    )
    with pytest.raises(DataPathError):
        nfs_reader.split_datastore_path("web01/web01.vmdk")


def test_a_file_is_found_where_nfs_mounts_names_its_datastore(tmp_path):
    (tmp_path / "web01").mkdir()
    (tmp_path / "web01" / "web01.vmdk").write_text("# Disk DescriptorFile\n")
    path = nfs_reader.local_path("[nfs-ds01] web01/web01.vmdk", {"nfs-ds01": DS}, mounts={"nfs-ds01": str(tmp_path)},
                                 state_dir=str(tmp_path / "state"))  # fmt: skip
    assert path == str(tmp_path / "web01" / "web01.vmdk")


@pytest.mark.parametrize(
    ("file_name", "mounts", "parameter", "words"),
    [
        ("[vmfs-ds01] web01/web01.vmdk", {}, "reader", "not NFS"),
        ("[nfs-ds01] web01/web01.vmdk", {"nfs-ds01": "relative/mnt"}, "nfs_mounts", "absolute"),
        ("[nfs-ds01] web01/web01.vmdk", {"nfs-ds01": "/no/such/mount"}, "nfs_mounts", "not a directory"),
        ("[nfs-ds01] web01/gone.vmdk", {"nfs-ds01": "TMP"}, "nfs_mounts", "has no file web01/gone.vmdk"),
    ],
)  # fmt: skip
def test_a_datastore_that_cannot_be_read_is_refused_naming_the_option(tmp_path, file_name, mounts, parameter, words):
    mounts = {name: str(tmp_path) if path == "TMP" else path for name, path in mounts.items()}
    with pytest.raises(DataPathError) as err:
        nfs_reader.local_path(file_name, {"nfs-ds01": DS, "vmfs-ds01": None}, mounts=mounts,
                              state_dir=str(tmp_path / "state"))  # fmt: skip
    assert err.value.parameter == parameter and words in str(err.value) and err.value.hint


def test_an_export_that_cannot_be_mounted_is_refused_with_the_way_out(tmp_path):
    """A real mount(8) of an export no server offers (and, on a kernel without NFS, of any export)."""
    with pytest.raises(DataPathError) as err:
        nfs_reader.mount_point(DS, {}, str(tmp_path))
    assert err.value.parameter == "nfs_mounts" and "could not mount datastore 'nfs-ds01'" in str(err.value)
    assert "nfs_mounts" in err.value.hint and "VDDK" in err.value.hint
    assert not os.path.ismount(tmp_path / "datastores" / "nfs-ds01")


def test_auto_takes_the_nfs_reader_only_without_vddk_and_with_every_disk_on_nfs(tmp_path):
    asked = []

    def on_nfs(answer):
        return lambda: asked.append(answer) or answer

    missing = str(tmp_path / "no-vddk")
    assert datapath.choose_reader(missing, datapath.Reader.AUTO, on_nfs(True)).reader is datapath.Reader.NFS
    assert datapath.choose_reader(str(tmp_path), datapath.Reader.NFS, on_nfs(False)).reader is datapath.Reader.NFS
    with pytest.raises(DataPathError) as err:
        datapath.choose_reader(missing, datapath.Reader.AUTO, on_nfs(False))
    assert err.value.parameter == "vddk_libdir" and "reader: nfs" in err.value.hint
    assert asked == [True, False]  # reader nfs asks vSphere nothing


def test_qemu_nbd_serves_a_snapshot_chain_read_only_byte_for_byte(tmp_path):
    """A flat disk with an older snapshot's delta above it (the file a later snapshot froze), as ESXi keeps
    them on an NFS datastore, served as the NFS reader serves it: what QEMU reads through the chain."""
    vm_dir = tmp_path / "web01"
    vm_dir.mkdir()
    base, delta = str(vm_dir / "web01.vmdk"), str(vm_dir / "web01-000001.vmdk")
    subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=monolithicFlat", base, "8M"], check=True)
    first, second = os.urandom(2 * MiB), os.urandom(MiB)
    with open(vm_dir / "web01-flat.vmdk", "r+b") as flat:
        flat.write(first)
    subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=twoGbMaxExtentSparse",
                    "-b", "web01.vmdk", "-F", "vmdk", delta], check=True)  # fmt: skip
    with open(tmp_path / "second", "wb") as data:
        data.write(second)
    subprocess.run(["qemu-io", "-f", "vmdk", "-c", f"write -s {tmp_path / 'second'} {MiB} {MiB}", delta], check=True,
                   capture_output=True)  # fmt: skip
    expected = first[:MiB] + second + bytes(6 * MiB)
    sock = str(tmp_path / "nbd.sock")
    proc = subprocess.Popen(nfs_reader.qemu_nbd_argv(delta, sock), stderr=subprocess.PIPE)
    try:
        wait_for(lambda: os.path.exists(sock), timeout=30, what="qemu-nbd")
        handle = nbd.NBD()
        handle.connect_uri(f"nbd+unix:///?socket={sock}")
        assert handle.is_read_only() and handle.get_size() == 8 * MiB
        assert handle.pread(8 * MiB, 0) == expected
        with pytest.raises(nbd.Error):
            handle.pwrite(b"x" * 512, 0)
        handle.shutdown()
    finally:
        proc.kill()
        proc.wait()
    with open(vm_dir / "web01-flat.vmdk", "rb") as flat:
        assert flat.read(2 * MiB) == first  # the frozen file below is as it was


def test_a_chain_qemu_cannot_read_is_refused_naming_the_reader_and_the_way_out(tmp_path):
    """A delta whose parent is named by an ESXi host's own path (/vmfs/volumes/...), which no NFS client
    sees: qemu-nbd stops before serving, and the reader's refusal says what QEMU said and what to use."""
    base, delta = tmp_path / "web01.vmdk", tmp_path / "web01-000001.vmdk"
    subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=monolithicFlat", str(base), "8M"],
                   check=True)  # fmt: skip
    subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=twoGbMaxExtentSparse",
                    "-b", "web01.vmdk", "-F", "vmdk", str(delta)], check=True)  # fmt: skip
    text = delta.read_text()
    assert 'parentFileNameHint="web01.vmdk"' in text
    delta.write_text(text.replace('"web01.vmdk"', '"/vmfs/volumes/5f1c-9e2a/web01/web01.vmdk"'))
    log = tmp_path / "reader.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(nfs_reader.qemu_nbd_argv(str(delta), str(tmp_path / "nbd.sock")), stdout=out,
                                stderr=out)  # fmt: skip
    proc.wait(30)
    choice = datapath.ReaderChoice(datapath.Reader.NFS, "the NFS reader (reader: nfs)")
    with pytest.raises(DataPathError) as err:
        datapath._serving(str(tmp_path / "nbd.sock"), proc, str(log), choice)
    assert err.value.parameter == "reader" and "/vmfs/volumes/5f1c-9e2a" in str(err.value)
    assert "VDDK" in err.value.hint
