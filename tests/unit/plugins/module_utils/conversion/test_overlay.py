"""The conversion's copy-on-write layer with the real qemu-img and qemu-io on small files: nothing reaches
the volume until the commit, the commit writes only what the conversion wrote, a killed run's overlays go."""

import os
import subprocess
from pathlib import Path

import pytest

from ansible_collections.xms.warm_migration.plugins.module_utils.conversion import overlay
from ansible_collections.xms.warm_migration.plugins.module_utils.conversion.errors import ConversionError

MIB = 1 << 20


def volume(tmp_path, name, fill):
    path = tmp_path / name
    path.write_bytes(bytes([fill]) * (4 * MIB))
    return str(path)


def write(path, offset, length, pattern):
    subprocess.run(["qemu-io", "-f", overlay.FORMAT, "-c", f"write -P {pattern} {offset} {length}", path],
                   check=True, capture_output=True)  # fmt: skip


def test_writes_stay_in_the_overlays_until_the_commit_writes_exactly_them(tmp_path):
    volumes = [volume(tmp_path, "boot.raw", 0x11), volume(tmp_path, "data.raw", 0x22)]
    state_dir = str(tmp_path / "state")
    with overlay.overlays(volumes, state_dir, "m-1") as layers:
        assert oct(os.stat(overlay.overlay_dir(state_dir, "m-1")).st_mode & 0o777) == "0o700"
        write(layers[0], MIB, 64 << 10, 0x5A)
        assert Path(volumes[0]).read_bytes() == b"\x11" * (4 * MIB)  # the volume is untouched
        overlay.commit(layers)
    boot = Path(volumes[0]).read_bytes()
    assert boot[MIB : MIB + (64 << 10)] == b"\x5a" * (64 << 10)
    assert boot[:MIB] + boot[MIB + (64 << 10) :] == b"\x11" * (4 * MIB - (64 << 10))
    assert Path(volumes[1]).read_bytes() == b"\x22" * (4 * MIB)
    assert not os.path.exists(overlay.overlay_dir(state_dir, "m-1"))


def test_a_failure_inside_leaves_the_volume_as_it_was_and_no_overlay(tmp_path):
    boot = volume(tmp_path, "boot.raw", 0x11)
    state_dir = str(tmp_path / "state")
    with pytest.raises(RuntimeError), overlay.overlays([boot], state_dir, "m-1") as layers:
        write(layers[0], 0, 64 << 10, 0x5A)
        raise RuntimeError("virt-v2v failed")
    assert Path(boot).read_bytes() == b"\x11" * (4 * MIB)
    assert not os.path.exists(overlay.overlay_dir(state_dir, "m-1"))


def test_a_killed_runs_overlays_are_replaced_by_the_next_run_and_removed_by_discard(tmp_path):
    boot = volume(tmp_path, "boot.raw", 0x11)
    state_dir = str(tmp_path / "state")
    stale = overlay.overlay_dir(state_dir, "m-1")
    os.makedirs(stale)
    open(os.path.join(stale, "disk0.qcow2"), "w").close()  # what a kill -9 left
    with overlay.overlays([boot], state_dir, "m-1") as layers:
        assert os.path.getsize(layers[0]) > 0  # made anew
    os.makedirs(stale)
    overlay.discard(state_dir, "m-1")
    assert not os.path.exists(stale)


def test_a_volume_that_cannot_be_read_is_a_conversion_error(tmp_path):
    with pytest.raises(ConversionError) as err, overlay.overlays([str(tmp_path / "gone")], str(tmp_path), "m-1"):
        pytest.fail("no overlay over a missing volume")
    assert "qemu-img create failed" in str(err.value) and "rolled_back" in err.value.hint
