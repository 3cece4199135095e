"""Fixtures for the vSphere lab: a logged-in client, lab VMs, the writer, the lab's VDDK."""

import json
import os
import ssl
import subprocess
import sys
import urllib.request
import uuid
from contextlib import contextmanager

import pytest

from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere.client import VSphereClient, VSphereConnection

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
LAB_DIR = os.path.join(os.environ.get("XMS_LAB_DIR", "/var/lib/xms-lab"), "vsphere")
CBT = os.path.join(ROOT, "lab", "vsphere", "cbt.py")
# The lab's VDDK (lab/vsphere/vddk, built by up.sh): what every test that reads a source disk gives as vddk_libdir.
VDDK_LIBDIR = os.path.join(LAB_DIR, "vddk")


@pytest.fixture(scope="session")
def lab():
    path = os.path.join(LAB_DIR, "lab.json")
    if not os.path.exists(path):
        pytest.fail(f"the vSphere lab is not up ({path} is missing): run lab/vsphere/up.sh")
    with open(path) as handle:
        return json.load(handle)


def connection(lab, **override):
    values = {"hostname": lab["hostname"], "username": lab["username"], "password": lab["password"],
              "port": lab["port"], "validate_certs": False, **override}  # fmt: skip
    return VSphereConnection(**values)


@pytest.fixture(scope="session")
def client(lab):
    with VSphereClient.connect(connection(lab)) as session:
        yield session


LAB_RELEASE = "8.0.3"  # what vcsim reports for vCenter and every host unless a test moves them (lab/vsphere/up.sh)


@contextmanager
def releases(lab, *, vcenter=None, host=None, esxi=None):
    """vCenter, or one ESXi host, reporting another release for the block (lab/vsphere/vcsim: /lab/versions)."""

    def post(change):
        request = urllib.request.Request(f"https://{lab['hostname']}:{lab['port']}/lab/versions", method="POST",
                                         data=json.dumps(change).encode(),
                                         headers={"Content-Type": "application/json"})  # fmt: skip
        urllib.request.urlopen(request, context=ssl._create_unverified_context(), timeout=10).close()

    post({"vcenter": vcenter, "host": host, "esxi": esxi})
    try:
        yield
    finally:
        post({"vcenter": LAB_RELEASE if vcenter else None, "host": host, "esxi": LAB_RELEASE if esxi else None})


def lab_cmd(*args):
    out = subprocess.run([sys.executable, CBT, *args], check=True, capture_output=True, text=True).stdout
    return json.loads(out) if out.strip() else {}


def set_cbt(client, vm, enabled: bool) -> None:
    """Switch CBT as an administrator does (VMware's "reset CBT" is off, then on)."""
    from pyVmomi import vim

    client.wait_task(vm.ReconfigVM_Task(vim.vm.ConfigSpec(changeTrackingEnabled=enabled)), "switching CBT")


def grow_disk(client, vm, disk_key: int, capacity: int) -> None:
    """Grow a disk as an administrator does: ReconfigVM with the disk's new capacity."""
    from pyVmomi import vim

    disk = next(d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk) and d.key == disk_key)
    disk.capacityInBytes, disk.capacityInKB = capacity, capacity // 1024
    spec = vim.vm.ConfigSpec(deviceChange=[vim.vm.device.VirtualDeviceSpec(operation="edit", device=disk)])
    client.wait_task(vm.ReconfigVM_Task(spec), "growing a disk")


def add_disk(client, vm, capacity: int, controller_key=None) -> int:
    """Add a new disk as an administrator does (on the first SCSI controller unless told); returns its key."""
    from pyVmomi import vim

    devices = vm.config.hardware.device
    if controller_key is None:
        controller_key = next(d.key for d in devices if isinstance(d, vim.vm.device.VirtualSCSIController))
    used = {d.unitNumber for d in devices if getattr(d, "controllerKey", None) == controller_key}
    unit = next(u for u in range(16) if u not in used and u != 7)  # 7 is the SCSI controller's own
    disks = [d for d in devices if isinstance(d, vim.vm.device.VirtualDisk)]
    # A file name of its own: vcsim's generated ones can repeat an existing disk's.
    folder = (disks[0].backing.fileName.rsplit("/", 1)[0] + "/") if disks else ""
    name = f"{folder}added-{uuid.uuid4().hex[:8]}.vmdk"
    backing = vim.vm.device.VirtualDisk.FlatVer2BackingInfo(fileName=name, diskMode="persistent", thinProvisioned=True)
    disk = vim.vm.device.VirtualDisk(key=-1, controllerKey=controller_key, unitNumber=unit, capacityInBytes=capacity,
                                     backing=backing)  # fmt: skip
    spec = vim.vm.ConfigSpec(deviceChange=[vim.vm.device.VirtualDeviceSpec(operation="add", fileOperation="create",
                                                                           device=disk)])  # fmt: skip
    client.wait_task(vm.ReconfigVM_Task(spec), "adding a disk")
    return next(d.key for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk)
                and d.key not in {k.key for k in disks})  # fmt: skip


def remove_disk(client, vm, disk_key: int) -> None:
    """Detach a disk as an administrator does (its file stays on the datastore)."""
    from pyVmomi import vim

    disk = next(d for d in vm.config.hardware.device if d.key == disk_key)
    spec = vim.vm.ConfigSpec(deviceChange=[vim.vm.device.VirtualDeviceSpec(operation="remove", device=disk)])
    client.wait_task(vm.ReconfigVM_Task(spec), "removing a disk")
