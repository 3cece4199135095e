"""The source side of preflight against the lab's vCenter: releases, snapshots, datastore space.

vcsim reports the releases the lab gives it (lab/vsphere/vcsim), and the tests move vCenter or the
VM's host to another release to see both verdicts; the VDDK in the lab's libdir is the lab's test
double, named as VMware names its library (8.0.3), and a directory naming it 9.0.0 stands for VDDK 9.
"""

import os
import shutil

import pytest

from ansible_collections.xms.warm_migration.plugins.module_utils.migration.errors import PreflightError
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack import volumes as os_volumes
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere import inventory

from ..vsphere.conftest import VDDK_LIBDIR, releases
from .conftest import start


@pytest.fixture
def vddk_9(tmp_path):
    """A VDDK 9.0.0 directory: the lab's library under the name VMware gives VDDK 9's."""
    lib64 = tmp_path / "vddk9" / "lib64"
    lib64.mkdir(parents=True)
    shutil.copy(os.path.join(VDDK_LIBDIR, "lib64", "libvixDiskLib.so.8"), lib64 / "libvixDiskLib.so.9.0.0")
    os.symlink("libvixDiskLib.so.9.0.0", lib64 / "libvixDiskLib.so.9")
    return str(tmp_path / "vddk9")


def host_of(vsphere, vm) -> str:
    host = inventory.properties(vsphere, vm, ["runtime.host"])["runtime.host"]
    return inventory.properties(vsphere, host, ["name"])["name"]


def test_the_vddk_check_reads_both_releases_from_the_api(vsphere, source, openstack, target):
    predicted = start(vsphere, source, openstack, target, check_mode=True)
    vddk = next(c for c in predicted.checks if c["name"] == "vddk")
    assert vddk == {"name": "vddk", "ok": True, "message": "VDDK 8.0.3 serves vCenter 8.0.3 and ESXi 8.0.3"
                    f" (host '{host_of(vsphere, source)}')"}  # fmt: skip
    source_check = next(c for c in predicted.checks if c["name"] == "source")
    assert source_check["ok"] and "datastore" not in source_check["message"]  # the lab's file system has room


def test_vddk_9_is_refused_for_an_esxi_6_host_and_vddk_8_is_not(vsphere, source, openstack, target, lab, vddk_9):
    """VDDK 9 logs in to ESXi 6.x and answers its metadata calls, then cannot read: refused before anything."""
    host = host_of(vsphere, source)
    with releases(lab, host=host, esxi="6.7.0"):
        with pytest.raises(PreflightError) as err:
            start(vsphere, source, openstack, target, vddk_libdir=vddk_9)
        assert err.value.parameter == "vddk_libdir"
        assert f"VDDK 9.0.0 in {vddk_9} cannot serve ESXi 6.7.0 (host '{host}')" in str(err.value)
        assert "Put VDDK 8.0 in vddk_libdir" in str(err.value) and "Nothing was created" in str(err.value)
        assert (
            os_volumes.find_volumes(openstack, start(vsphere, source, openstack, target, check_mode=True).migration_id)
            == []
        )
        vddk = next(c for c in start(vsphere, source, openstack, target, check_mode=True).checks if c["name"] == "vddk")
        assert vddk["ok"] and "ESXi 6.7.0" in vddk["message"]


def test_a_vddk_older_than_vcenter_is_refused(vsphere, source, openstack, target, lab):
    with releases(lab, vcenter="9.0.0"), pytest.raises(PreflightError) as err:
        start(vsphere, source, openstack, target)
    assert err.value.parameter == "vddk_libdir" and "cannot serve vCenter 9.0.0" in str(err.value)
    assert "Put VDDK 9.0 in vddk_libdir" in str(err.value)


def test_no_vddk_in_the_libdir_is_refused(vsphere, source, openstack, target, tmp_path):
    with pytest.raises(PreflightError) as err:
        start(vsphere, source, openstack, target, vddk_libdir=str(tmp_path))
    assert err.value.parameter == "vddk_libdir" and "holds no lib64/libvixDiskLib.so.N" in str(err.value)
