"""The VDDK release against vCenter's and the ESXi host's: VMware's window (own release and the two before)."""

import os

import pytest

from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere.versions import (
    SourceVersions,
    served_by,
    vddk_verdict,
    vddk_version,
)


def vddk(tmp_path, *names, real=None):
    """A VDDK directory laid out as VMware's tarball is: lib64/libvixDiskLib.so.N linking to .so.N.x.y."""
    lib64 = tmp_path / "lib64"
    lib64.mkdir(parents=True)
    if real:
        (lib64 / real).write_bytes(b"")
    for name in names:
        os.symlink(real or "missing", lib64 / name)
    return str(tmp_path)


def source(vcenter="8.0.3", esxi="8.0.2"):
    return SourceVersions(vcenter=vcenter, esxi=esxi, host="esx07")


def test_the_version_comes_from_the_library_file_name(tmp_path):
    assert vddk_version(vddk(tmp_path, "libvixDiskLib.so.8", real="libvixDiskLib.so.8.0.3")) == "8.0.3"


def test_a_bare_major_names_a_release_only_from_7_on(tmp_path):
    assert vddk_version(vddk(tmp_path / "a", real="libvixDiskLib.so.9")) == "9.0"
    assert vddk_version(vddk(tmp_path / "b", real="libvixDiskLib.so.6")) is None


def test_each_release_serves_its_own_and_the_two_before():
    assert served_by((8, 0)) == [(6, 7), (7, 0), (8, 0)]
    assert served_by((9, 0)) == [(7, 0), (8, 0), (9, 0)]
    assert served_by((6, 5)) == [(6, 0), (6, 5)]
    assert served_by((10, 0)) == [(8, 0), (9, 0), (10, 0)]  # a release newer than this list knows


def test_a_fitting_vddk_passes_and_says_what_it_serves(tmp_path):
    verdict = vddk_verdict(vddk(tmp_path, "libvixDiskLib.so.8", real="libvixDiskLib.so.8.0.3"), source(esxi="6.7.0"))
    assert verdict.ok and verdict.message == "VDDK 8.0.3 serves vCenter 8.0.3 and ESXi 6.7.0 (host 'esx07')"


def test_vddk_9_refuses_esxi_6_and_names_what_fits(tmp_path):
    libdir = vddk(tmp_path, "libvixDiskLib.so.9", real="libvixDiskLib.so.9.0.0")
    verdict = vddk_verdict(libdir, source(esxi="6.7.0"))
    assert not verdict.ok and "cannot serve ESXi 6.7.0" in verdict.message and "7.0, 8.0 or 9.0" in verdict.message
    assert verdict.hint.startswith("Put VDDK 8.0 in vddk_libdir")


def test_a_vddk_older_than_vcenter_is_refused(tmp_path):
    verdict = vddk_verdict(
        vddk(tmp_path, "libvixDiskLib.so.7", real="libvixDiskLib.so.7.0.3"), source("9.0.0", "8.0.3")
    )
    assert not verdict.ok and "cannot serve vCenter 9.0.0" in verdict.message
    assert verdict.hint.startswith("Put VDDK 9.0 in vddk_libdir")


@pytest.mark.parametrize("vcenter, esxi, hint", [
    ("9.0.0", "6.5.0", "move the VM to a host on ESXi 7.0 or later"),
    ("6.5.0", "8.0.0", "vCenter must be at least the ESXi host's release"),
])  # fmt: skip
def test_when_no_vddk_serves_both_the_hint_says_what_to_change(tmp_path, vcenter, esxi, hint):
    verdict = vddk_verdict(vddk(tmp_path, "libvixDiskLib.so.8", real="libvixDiskLib.so.8.0.3"), source(vcenter, esxi))
    assert not verdict.ok and hint in verdict.hint


def test_a_vcenter_newer_than_the_known_releases_asks_for_its_own_vddk(tmp_path):
    verdict = vddk_verdict(
        vddk(tmp_path, "libvixDiskLib.so.9", real="libvixDiskLib.so.9.0.0"), source("10.0.0", "9.0.0")
    )
    assert not verdict.ok and verdict.hint.startswith("Put VDDK 10.0 in vddk_libdir")


def test_no_vddk_and_an_unknown_release(tmp_path):
    missing = vddk_verdict(str(tmp_path), source())
    assert not missing.ok and "holds no lib64/libvixDiskLib.so.N" in missing.message
    unknown = vddk_verdict(vddk(tmp_path / "six", real="libvixDiskLib.so.6"), source("6.7.0", "6.7.0"))
    assert unknown.ok and unknown.message.startswith("cannot tell whether this VDDK serves")
