"""Both labs at once: a vSphere source VM and the OpenStack target project."""

import hashlib
import json
import os
import subprocess
import sys
import threading
import time

import nbd
import pytest
from lab_reset import annotation, delete_migration, power_state, reset_vm  # lab/demo (tests/functional/conftest.py)

from ansible_collections.xms.warm_migration.plugins.module_utils.conversion.virt_v2v import ConversionOptions
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.context import MigrationContext
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.cutover import CutoverSettings
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.initialize import (
    InitOutcome,
    NetworkMapping,
    TargetSettings,
    initialize,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.settings import SyncSettings
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.validation import ValidationSettings
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack.attach import attach_for_write
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack.client import OpenStackClient
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere import cbt, datapath, inventory
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere.client import VSphereClient

from ..openstack.conftest import CLOUDS
from ..vsphere import conftest as vsphere_conftest
from ..vsphere.conftest import VDDK_LIBDIR, connection, lab_cmd, set_cbt

SOURCE_VM = "lab-vm-2"
EVENTS_VM = "lab-vm-events"  # what events leave behind (grown disks, CBT resets) touches no other test


@pytest.fixture(scope="session")
def vsphere(lab):
    with VSphereClient.connect(connection(lab)) as session:
        yield session


lab = vsphere_conftest.lab  # the vSphere lab's connection file, one fixture for both test packages


@pytest.fixture(scope="session")
def openstack():
    if not os.path.exists(CLOUDS):
        pytest.fail(f"the OpenStack lab is not up ({CLOUDS} is missing): run lab/openstack/up.sh")
    os.environ["OS_CLIENT_CONFIG_FILE"] = CLOUDS
    return OpenStackClient.connect(cloud="xms-lab")


@pytest.fixture
def source(vsphere, openstack):
    """The source VM, with no migration of it left from an earlier run."""
    vm = inventory.find_vm(vsphere, name=SOURCE_VM)
    delete_migration(openstack, MigrationContext.read(vsphere, vm).migration_id)
    yield vm
    delete_migration(openstack, MigrationContext.read(vsphere, vm).migration_id)


@pytest.fixture
def cutover_vm(vsphere, openstack, request):
    """The lab VM the test names (``parametrize(..., indirect=True)``), put back before and after the test."""
    vm = inventory.find_vm(vsphere, name=request.param)
    reset_vm(vsphere, vm, openstack)
    yield vm
    reset_vm(vsphere, vm, openstack)


@pytest.fixture
def vm_1(vsphere, openstack):
    """lab-vm-1 put back (no migration, no instance, powered on) before and after the test."""
    vm = inventory.find_vm(vsphere, name="lab-vm-1")
    reset_vm(vsphere, vm, openstack)
    yield vm
    reset_vm(vsphere, vm, openstack)


@pytest.fixture
def events_vm(vsphere, openstack):
    """The events VM with no migration of it left from an earlier run, CBT on."""
    vm = inventory.find_vm(vsphere, name=EVENTS_VM)
    migration_id = MigrationContext.read(vsphere, vm).migration_id
    delete_migration(openstack, migration_id)
    yield vm
    delete_migration(openstack, migration_id)
    set_cbt(vsphere, vm, True)


@pytest.fixture
def target():
    return TargetSettings(volume_type="standard-ssd", availability_zone="az1",
                          network_map=[NetworkMapping(source="DC0_DVPG0", network="lab-net-a")])  # fmt: skip


def data_cutover(settings: SyncSettings, **options) -> CutoverSettings:
    """The cutover of a lab VM that holds test data, no guest: nothing to convert, nothing to answer in the cloud."""
    return CutoverSettings(sync=settings, conversion=ConversionOptions(skip=True),
                           validation=ValidationSettings(enabled=False), **options)  # fmt: skip


def start(vsphere, vm, openstack, target: TargetSettings, **options) -> InitOutcome:
    """warm_migration_init as a conversion host with the lab's VDDK runs it, in a context of its own."""
    options.setdefault("vddk_libdir", VDDK_LIBDIR)
    return initialize(MigrationContext.read(vsphere, vm, openstack), target, **options)


@pytest.fixture
def settings(tmp_path, lab):
    return SyncSettings(state_dir=str(tmp_path / "state"), vddk_libdir=VDDK_LIBDIR)


@pytest.fixture
def inventory_reads(monkeypatch):
    """The VMs whose inventory is read from vSphere from now on (a spy: every read still goes to vcsim)."""
    reads = []
    read = inventory.inventory

    def counted(client, vm):
        reads.append(vm)
        return read(client, vm)

    monkeypatch.setattr(inventory, "inventory", counted)
    return reads


def sha256_of(read, size):
    digest = hashlib.sha256()
    for offset in range(0, size, 8 << 20):
        digest.update(read(min(8 << 20, size - offset), offset))
    return digest.hexdigest()


def sha256_of_target(path, size):
    """The digest of an attached volume: a path, or the NBD URI of its format layer (qcow2, LUKS)."""
    if path.startswith("nbd"):
        handle = nbd.NBD()
        handle.connect_uri(path)
        try:
            return sha256_of(handle.pread, size)
        finally:
            handle.shutdown()
    fd = os.open(path, os.O_RDONLY)
    try:
        return sha256_of(lambda n, o: os.pread(fd, n, o), size)
    finally:
        os.close(fd)


def assert_volumes_equal_source(vsphere, vm, openstack, state):
    """Every volume equals its disk as of a fresh snapshot (take it only when the guest is not writing)."""
    disks = {d.key: d for d in inventory.inventory(vsphere, vm).disks}
    with cbt.sync_snapshot(vsphere, vm, purpose="verification") as snap:
        for disk in state.disks:
            source = disks[disk.disk_key]
            with datapath.open_disk(vsphere, vm, snap, source, vddk_libdir=VDDK_LIBDIR) as uri:
                handle = nbd.NBD()
                handle.connect_uri(uri)
                want = sha256_of(handle.pread, source.capacity)
                handle.shutdown()
            with attach_for_write(openstack, disk.volume_id) as path:
                got = sha256_of_target(path, source.capacity)
            assert got == want, f"volume of disk {disk.disk_key} differs from the source"


def wave_playbooks(lab, tmp_path, children: dict, data_path: dict):
    """A runner of the collection's wave playbooks (``run(name, *extra, check=True, env_extra=None)``) on the labs.

    The inventory holds ``children`` (the wave ``wave1``, conversion hosts) under the labs'
    connection settings; the vCenter password goes in a 0600 extra-vars file, never on argv.
    With ``check`` a run must succeed; no run may print the password."""
    secrets = tmp_path / "vcenter.json"
    secrets.write_text(json.dumps({"vcenter_password": lab["password"]}))
    secrets.chmod(0o600)
    vcenter = {k: lab[k] for k in ("hostname", "port", "username")}
    inventory_doc = {"all": {"vars": {
        "warm_migration_vcenter": {**vcenter, "password": "{{ vcenter_password }}", "vcenter_validate_certs": False},
        "warm_migration_cloud": {"cloud": "xms-lab"},
        "warm_migration_data_path": data_path,
    }, "children": children}}  # fmt: skip
    inventory_path = tmp_path / "inventory.json"
    inventory_path.write_text(json.dumps(inventory_doc))
    collections = sys.modules["ansible_collections"].__path__[0].rsplit("/ansible_collections", 1)[0]
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": collections, "ANSIBLE_LOCALHOST_WARNING": "false",
           "ANSIBLE_PIPELINING": "true", "ANSIBLE_HOST_KEY_CHECKING": "false"}  # fmt: skip

    def run(name, *extra, check=True, env_extra=None):
        argv = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", str(inventory_path),
                "-e", f"@{secrets}", "-e", "wave=wave1", *extra, f"xms.warm_migration.{name}"]  # fmt: skip
        done = subprocess.run(argv, env={**env, **(env_extra or {})}, capture_output=True, text=True, check=False)
        assert lab["password"] not in done.stdout + done.stderr
        if check:
            assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-2000:]
        return done

    return run


def snapshot_names(vsphere, vm) -> list:
    return sorted(t.name for t in cbt._walk(inventory.properties(vsphere, vm, ["snapshot"]).get("snapshot")))


BLOCK = 256 << 10  # a guest write of the lab's writer


class Writer:
    """Writes BLOCK-sized blocks to one disk at ``bytes_per_s`` until stopped."""

    def __init__(self, vm_name: str, key: str, bytes_per_s: float) -> None:
        self.args, self.period = (vm_name, key), BLOCK / bytes_per_s
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self.stop_event.is_set():
            lab_cmd("write", *self.args, "1", str(BLOCK))
            next_at += self.period
            self.stop_event.wait(max(0.0, next_at - time.monotonic()))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *_exc):
        self.stop_event.set()
        self.thread.join()


__all__ = [
    "Writer",
    "annotation",
    "assert_volumes_equal_source",
    "lab_cmd",
    "power_state",
    "reset_vm",
    "snapshot_names",
    "wave_playbooks",
]
