"""Volumes written through their format: LUKS-encrypted qcow2 (Cinder's NFS driver), raw LUKS
(a block back-end's encrypted volume) and a qcow2 overlay left by a volume snapshot.

Each image is made the way Cinder makes it (``qemu-img create`` with a secret object) and read
back outside the collection (``qemu-img compare`` with the key), so the plaintext comparison
does not trust the code under test.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ansible_collections.xms.warm_migration.plugins.module_utils.copy.copier import copy_extents
from ansible_collections.xms.warm_migration.plugins.module_utils.copy.errors import TargetError
from ansible_collections.xms.warm_migration.plugins.module_utils.copy.extents import Extent
from ansible_collections.xms.warm_migration.plugins.module_utils.copy.layer import (
    VolumeFormat,
    plain_view,
    volume_format,
)

from ..conftest import qemu_img, require

MiB = 1 << 20
SIZE = 64 * MiB
KEY = bytes(range(32))  # Cinder's passphrase is the hex of the key manager's 32-byte key
PASSPHRASE = KEY.hex().encode()
MARKER = b"XMS-PLAINTEXT-MARKER-7f3a"


def qemu_img_create(*args):
    qemu_img("create", "-q", *args)


def _secret_file(tmp_path):
    path = tmp_path / "key"
    path.write_bytes(PASSPHRASE)
    return str(path)


def make_encrypted_qcow2(tmp_path, name="volume.qcow2", size=SIZE):
    path = str(tmp_path / name)
    qemu_img_create(
        "-f", "qcow2", "--object", f"secret,id=s1,file={_secret_file(tmp_path)}",
        "-o", "encrypt.format=luks,encrypt.key-secret=s1,encrypt.cipher-alg=aes-256,encrypt.cipher-mode=xts,"
        "encrypt.ivgen-alg=plain64", path, str(size),
    )  # fmt: skip
    return path


def make_raw_luks(tmp_path, size=SIZE):
    path = str(tmp_path / "device.luks")
    qemu_img_create("-f", "luks", "--object", f"secret,id=s1,file={_secret_file(tmp_path)}", "-o", "key-secret=s1",
                    path, str(size))  # fmt: skip
    return path


def source_with_marker(servers, tmp_path):
    """A disk with data, a marker, garbage-free holes; served by nbdkit like a vSphere snapshot."""
    path = str(tmp_path / "source.raw")
    with open(path, "wb") as handle:
        handle.truncate(SIZE)
        for offset in (0, 5 * MiB, 40 * MiB):
            handle.seek(offset)
            handle.write(os.urandom(MiB))
        handle.seek(20 * MiB)
        handle.write(MARKER * 1000)
    return path, servers.nbdkit("file", path)


def plaintext_equals(tmp_path, image_opts, raw):
    """``qemu-img compare`` of the decrypted image with a raw file: outside the code under test."""
    done = subprocess.run(
        [require("qemu-img"), "compare", "-q", "--object", f"secret,id=s0,file={_secret_file(tmp_path)}",
         "--image-opts", image_opts, f"driver=raw,file.filename={raw}"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return done.returncode == 0


def test_an_encrypted_qcow2_volume_holds_the_plaintext_and_no_marker_on_disk(servers, tmp_path):
    raw, source = source_with_marker(servers, tmp_path)
    volume = make_encrypted_qcow2(tmp_path)
    with plain_view(volume, VolumeFormat.QCOW2, PASSPHRASE) as uri:
        assert uri.startswith("nbd+unix://")
        copy_extents(source, uri, [Extent(0, SIZE)])
    assert plaintext_equals(tmp_path, f"driver=qcow2,encrypt.key-secret=s0,file.filename={volume}", raw)
    with open(volume, "rb") as handle:
        assert MARKER not in handle.read()


def test_a_raw_luks_volume_is_never_trusted_to_read_as_zero(servers, tmp_path):
    """Below LUKS, nothing reads as zero: zeros of the source are written (encrypted), never skipped."""
    raw, source = source_with_marker(servers, tmp_path)
    volume = make_raw_luks(tmp_path)
    with plain_view(volume, VolumeFormat.RAW, PASSPHRASE) as uri:
        stats = copy_extents(source, uri, [Extent(0, SIZE)])
    assert stats.bytes_skipped_zero == 0 and stats.bytes_zeroed > 0
    assert plaintext_equals(tmp_path, f"driver=luks,key-secret=s0,file.filename={volume}", raw)


def test_a_snapshotted_volume_is_written_into_its_qcow2_overlay(servers, tmp_path):
    """Cinder's NFS snapshot: the raw file becomes the backing of a qcow2 overlay, which takes the writes."""
    raw, source = source_with_marker(servers, tmp_path)
    base = str(tmp_path / "volume-1")
    with open(base, "wb") as handle:
        handle.write(os.urandom(SIZE))  # the replica before this sync: other data everywhere
    before = Path(base).read_bytes()
    overlay = str(tmp_path / "volume-1.snap")
    qemu_img_create("-f", "qcow2", "-b", "volume-1", "-F", "raw", overlay)
    with plain_view(overlay, VolumeFormat.QCOW2) as uri:
        copy_extents(source, uri, [Extent(0, SIZE)])
    assert plaintext_equals(tmp_path, f"driver=qcow2,file.filename={overlay}", raw)
    assert Path(base).read_bytes() == before  # the snapshot's data is untouched


def test_an_encrypted_snapshot_chain_opens_every_layer_with_the_key(servers, tmp_path):
    raw, source = source_with_marker(servers, tmp_path)
    make_encrypted_qcow2(tmp_path, "volume-2")
    overlay = str(tmp_path / "volume-2.snap")
    qemu_img_create(
        "-f",
        "qcow2",
        "--object",
        f"secret,id=s1,file={_secret_file(tmp_path)}",
        "-o",
        "encrypt.format=luks,encrypt.key-secret=s1",
        "-b",
        "volume-2",
        "-F",
        "qcow2",
        overlay,
    )
    with plain_view(overlay, VolumeFormat.QCOW2, PASSPHRASE) as uri:
        copy_extents(source, uri, [Extent(0, SIZE)])
    opts = f"driver=qcow2,encrypt.key-secret=s0,backing.encrypt.key-secret=s0,file.filename={overlay}"
    assert plaintext_equals(tmp_path, opts, raw)


def test_a_wrong_key_is_refused_before_any_write(tmp_path):
    volume = make_encrypted_qcow2(tmp_path)
    before = Path(volume).read_bytes()
    with pytest.raises(TargetError) as err, plain_view(volume, VolumeFormat.QCOW2, b"0" * 64):
        pass
    assert "Invalid password" in str(err.value) or "key" in str(err.value)
    assert Path(volume).read_bytes() == before


def test_an_unknown_format_is_refused_naming_the_way_out():
    with pytest.raises(TargetError) as err:
        volume_format("vmdk", "vol-1")
    assert err.value.parameter == "attach_mode" and "nova" in err.value.hint


CHILD = """
import sys, time
from ansible_collections.xms.warm_migration.plugins.module_utils.copy.layer import VolumeFormat, plain_view
with plain_view(sys.argv[1], VolumeFormat.QCOW2, sys.argv[2].encode()) as uri:
    print(uri, flush=True)
    time.sleep(600)
"""


def _daemons_on(volume):
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                argv = handle.read().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"qemu-storage-daemon") and any(volume.encode() in a for a in argv):
            found.append((int(pid), argv))
    return found


def test_the_key_never_reaches_argv_and_the_view_dies_with_a_killed_run(tmp_path):
    volume = make_encrypted_qcow2(tmp_path)
    env = {
        **os.environ,
        "PYTHONPATH": sys.modules["ansible_collections"].__path__[0].rsplit("/ansible_collections", 1)[0],
    }
    child = subprocess.Popen([sys.executable, "-c", CHILD, volume, PASSPHRASE.decode()], stdout=subprocess.PIPE,
                             text=True, env=env)  # fmt: skip
    try:
        assert child.stdout.readline().startswith("nbd+unix://")
        daemons = _daemons_on(volume)
        assert len(daemons) == 1
        assert not any(PASSPHRASE in arg for arg in daemons[0][1])
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        deadline = time.monotonic() + 30
        while _daemons_on(volume) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _daemons_on(volume), "the view outlived the run that opened it"
    finally:
        child.kill()
