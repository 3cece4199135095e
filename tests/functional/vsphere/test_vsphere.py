"""The vSphere adapter against the lab: vcsim plus CBT, snapshots and disk contents from real QEMU state."""

import hashlib
import os
import subprocess

import nbd
import pytest

from ansible_collections.xms.warm_migration.plugins.module_utils.copy.extents import Extent, merge_extents
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere import cbt, datapath, inventory, power
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere.client import VSphereClient
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere.errors import (
    CbtResetError,
    DataPathError,
    PowerError,
    VmNotFoundError,
    VSphereAuthError,
)

from .conftest import LAB_DIR, VDDK_LIBDIR, add_disk, connection, grow_disk, lab_cmd, set_cbt

GiB = 1 << 30


class CountingVm:
    """The real VM, with a count of the offsets QueryChangedDiskAreas is asked from."""

    def __init__(self, vm):
        self.vm, self.offsets = vm, []

    def QueryChangedDiskAreas(self, **kwargs):  # the vSphere method's name
        self.offsets.append(kwargs["startOffset"])
        return self.vm.QueryChangedDiskAreas(**kwargs)


def nbd_sha256(uri, size):
    handle = nbd.NBD()
    handle.connect_uri(uri)
    digest = hashlib.sha256()
    for offset in range(0, size, 16 << 20):
        digest.update(handle.pread(min(16 << 20, size - offset), offset))
    handle.shutdown()
    return digest.hexdigest()


def test_wrong_password_is_clear_and_never_echoed(lab):
    secret = "not-" + os.urandom(4).hex()
    with pytest.raises(VSphereAuthError) as err:
        VSphereClient.connect(connection(lab, password=secret))
    assert err.value.parameter == "password" and secret not in str(err.value)
    assert secret not in repr(connection(lab, password=secret))


def test_unknown_vms_name_the_parameter(client):
    cases = [
        ({"name": "no-such-vm"}, "vm_name"),
        ({"uuid": "00000000-0000-0000-0000-000000000000"}, "vm_uuid"),
        ({"moref": "vm-999999"}, "vm_moref"),
        ({"moref": "group-d1"}, "vm_moref"),  # the root folder: a moref, but of no VM
        ({"name": "lab-vm-1", "datacenter": "DC9"}, "datacenter"),
    ]
    for kwargs, parameter in cases:
        with pytest.raises(VmNotFoundError) as err:
            inventory.find_vm(client, **kwargs)
        assert err.value.parameter == parameter


def test_inventory_describes_disks_and_nics(client, lab):
    vm = inventory.find_vm(client, name="lab-vm-1", datacenter="DC0")
    inv = inventory.inventory(client, vm)
    assert inv.moref == lab["vms"]["lab-vm-1"]["moref"]
    assert [d.capacity for d in inv.disks] == [64 << 20, 32 << 20]
    assert [(n.mac, n.network) for n in inv.nics] == [("00:50:56:01:00:01", "DC0_DVPG0")]
    assert inv.vcpus >= 1 and inv.memory_mb > 0 and inv.hw_version >= 7
    same = inventory.find_vm(client, uuid=inv.instance_uuid)
    assert same._moId == vm._moId == inventory.find_vm(client, moref=inv.moref)._moId


def test_preflight_fails_an_independent_disk_and_passes_a_plain_vm(client):
    vm = inventory.find_vm(client, name="lab-vm-indep")
    verdict = inventory.preflight(inventory.inventory(client, vm), inventory.datastore_space(client, vm))
    assert verdict.status == "fail" and any("independent" in r for r in verdict.reasons)
    vm = inventory.find_vm(client, name="lab-vm-2")
    plain = inventory.preflight(inventory.inventory(client, vm), inventory.datastore_space(client, vm))
    assert plain.status in ("pass", "warn") and not any("independent" in r for r in plain.reasons)


def test_datastore_space_is_the_lab_file_systems(client, lab):
    """vCenter reports its datastores' space; the lab's is that of the file system holding its disk images."""
    space = inventory.datastore_space(client, inventory.find_vm(client, name="lab-vm-2"))
    disks = os.statvfs(os.path.join(LAB_DIR, "disks"))
    assert [ds.name for ds in space] == ["LocalDS_0"]
    assert space[0].capacity == disks.f_blocks * disks.f_frsize
    assert abs(space[0].free - disks.f_bavail * disks.f_frsize) < 1 << 30  # as of the lab's last reconfigure


def test_enabling_cbt_is_idempotent_and_leaves_no_snapshot(client):
    vm = inventory.find_vm(client, name="lab-vm-2")
    cbt.enable_cbt(client, vm)
    assert cbt.enable_cbt(client, vm) is False
    inv = inventory.inventory(client, vm)
    assert inv.cbt_enabled and all(d.change_id for d in inv.disks) and inv.snapshot_count == 0


def test_changed_areas_are_exactly_what_the_guest_wrote(client):
    vm = inventory.find_vm(client, name="lab-vm-2")
    cbt.enable_cbt(client, vm)
    disk = inventory.inventory(client, vm).disks[0]
    with cbt.sync_snapshot(client, vm) as first:
        seed = cbt.changed_extents(client, vm, first, disk.key, None)
        since = first.change_ids[disk.key]
    assert seed and seed[0].offset == 0  # the data written when the lab started
    written = lab_cmd("write", "lab-vm-2", str(disk.key), "6")["written"]
    with cbt.sync_snapshot(client, vm) as second:
        delta = cbt.changed_extents(client, vm, second, disk.key, since)
        assert second.change_ids[disk.key] != since
    assert delta == merge_extents(Extent(o, n) for o, n in written)
    assert inventory.inventory(client, vm).snapshot_count == 0


def test_the_snapshot_is_removed_even_when_the_copy_fails(client):
    vm = inventory.find_vm(client, name="lab-vm-2")
    with pytest.raises(RuntimeError), cbt.sync_snapshot(client, vm):
        raise RuntimeError("copy failed")
    assert inventory.inventory(client, vm).snapshot_count == 0


def test_open_disk_serves_the_point_in_time_while_the_guest_writes(client, tmp_path):
    vm = inventory.find_vm(client, name="lab-vm-1")
    cbt.enable_cbt(client, vm)
    disk = inventory.inventory(client, vm).disks[0]
    with cbt.sync_snapshot(client, vm) as snap:
        with datapath.open_disk(client, vm, snap, disk, vddk_libdir=VDDK_LIBDIR) as uri:
            before = nbd_sha256(uri, disk.capacity)
            lab_cmd("write", "lab-vm-1", str(disk.key), "8")  # the running guest keeps writing
            assert nbd_sha256(uri, disk.capacity) == before
            workdir = os.path.dirname(uri.split("socket=")[1])
            assert sorted(os.listdir(workdir)) == ["nbd.sock", "reader.log", "xms_vddk_reader.py"]  # no password file
            with open(os.path.join(workdir, "reader.log"), "rb") as log:
                assert client.conn.password.encode() not in log.read()
            for pid in filter(str.isdigit, os.listdir("/proc")):  # the password is on no command line
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as handle:
                        assert client.conn.password.encode() not in handle.read().split(b"\0")
                except OSError:
                    continue
        assert not os.path.exists(workdir)  # socket and log are gone


def test_nbdkit_command_line_carries_no_password(client, tmp_path):
    vm = inventory.find_vm(client, name="lab-vm-1")
    disk = inventory.inventory(client, vm).disks[0]
    with cbt.sync_snapshot(client, vm) as snap:
        argv = datapath.nbdkit_argv(client, vm, snap, disk, socket_path="/x.sock", password_fd=7,
                                    vddk_libdir="/opt/vddk")  # fmt: skip
    assert "password=-7" in argv and client.conn.password not in " ".join(argv)
    assert f"snapshot={snap.moref}" in argv and f"vm=moref={vm._moId}" in argv


def test_paging_covers_a_disk_larger_than_2_tib(client):
    vm = inventory.find_vm(client, name="lab-vm-big")
    cbt.enable_cbt(client, vm)
    disk = inventory.inventory(client, vm).disks[0]
    assert disk.capacity > 2 << 40
    with cbt.sync_snapshot(client, vm) as first:
        since = first.change_ids[disk.key]
    written = lab_cmd("write", "lab-vm-big", str(disk.key), "20")["written"]
    counting = CountingVm(vm)
    with cbt.sync_snapshot(client, vm) as second:
        delta = cbt.changed_extents(client, counting, second, disk.key, since)
    calls = counting.offsets
    assert len(calls) >= 3 and calls == sorted(calls)  # 1 TiB per answer: three calls for 3 TiB
    assert delta == merge_extents(Extent(o, n) for o, n in written)
    assert any(e.offset > 2 << 40 for e in delta) or all(o < 2 << 40 for o, _n in written)


def test_a_cbt_reset_is_detected(client):
    """VMware's reset procedure (CBT off, then on) clears the change ids; the old one is refused afterwards."""
    vm = inventory.find_vm(client, name="lab-vm-stuck")
    cbt.enable_cbt(client, vm)
    disk = inventory.inventory(client, vm).disks[0]
    with cbt.sync_snapshot(client, vm) as first:
        since = first.change_ids[disk.key]
    set_cbt(client, vm, False)
    assert not any(d.change_id for d in inventory.inventory(client, vm).disks)
    set_cbt(client, vm, True)
    assert not any(d.change_id for d in inventory.inventory(client, vm).disks)  # until the next snapshot
    assert cbt.enable_cbt(client, vm) is True  # activates it
    with cbt.sync_snapshot(client, vm) as second, pytest.raises(CbtResetError):
        cbt.changed_extents(client, vm, second, disk.key, since)


def test_a_grown_disk_is_a_real_resize_and_its_new_area_reads_as_zero(client):
    vm = inventory.find_vm(client, name="lab-vm-stuck")
    cbt.enable_cbt(client, vm)
    disk = inventory.inventory(client, vm).disks[0]
    with cbt.sync_snapshot(client, vm) as first:
        since = first.change_ids[disk.key]
    grown = disk.capacity + 3 * (1 << 20) + 4096
    grow_disk(client, vm, disk.key, grown)
    assert inventory.inventory(client, vm).disks[0].capacity == grown
    with cbt.sync_snapshot(client, vm) as second:
        assert second.capacities[disk.key] == grown
        # vSphere reports nothing changed in the new area until the guest writes it: the client must copy it.
        assert cbt.changed_extents(client, vm, second, disk.key, since, grown) == []
        with datapath.open_disk(client, vm, second, disk, vddk_libdir=VDDK_LIBDIR) as uri:
            handle = nbd.NBD()
            handle.connect_uri(uri)
            assert handle.get_size() == grown
            assert handle.pread(grown - disk.capacity, disk.capacity) == bytes(grown - disk.capacity)
            handle.shutdown()


def test_orphaned_snapshots_of_a_crashed_run_are_removed(client):
    vm = inventory.find_vm(client, name="lab-vm-2")
    client.wait_task(vm.CreateSnapshot_Task(f"{cbt.SNAPSHOT_PREFIX}-crashed", "", False, False), "snapshot")
    client.wait_task(vm.CreateSnapshot_Task("operator-backup", "", False, False), "snapshot")
    assert cbt.remove_orphan_snapshots(client, vm) == 1
    assert inventory.inventory(client, vm).snapshot_count == 1  # the operator's own snapshot stays
    client.wait_task(vm.RemoveAllSnapshots_Task(), "cleanup")


def test_shutdown_with_and_without_the_power_off_fallback(client):
    stuck = inventory.find_vm(client, name="lab-vm-stuck")
    power.power_on(client, stuck)
    with pytest.raises(PowerError) as err:
        power.shutdown_guest(client, stuck, timeout=1, power_off_fallback=False)
    assert err.value.parameter == "shutdown_timeout"
    assert power.shutdown_guest(client, stuck, timeout=1, power_off_fallback=True) == "powered_off"
    assert power.shutdown_guest(client, stuck, timeout=1, power_off_fallback=True) == "already_off"
    assert power.power_on(client, stuck) is True
    clean = inventory.find_vm(client, name="lab-vm-indep")
    power.power_on(client, clean)
    assert power.shutdown_guest(client, clean, timeout=30, power_off_fallback=False) == "shutdown"
    power.power_on(client, clean)


def test_marking_the_source_migrated_is_idempotent(client):
    vm = inventory.find_vm(client, name="lab-vm-indep")
    assert power.mark_migrated(client, vm, "Migrated by xms.warm_migration; do not power on") in (True, False)
    assert power.mark_migrated(client, vm, "Migrated by xms.warm_migration; do not power on") is False


def test_lab_disks_are_real_images():
    assert subprocess.run(["qemu-img", "--version"], capture_output=True, check=True).returncode == 0


def test_a_missing_reader_or_vddk_fails_naming_the_option(client, tmp_path):
    """Debian's nbdkit has no vddk plugin: auto picks the collection's reader, which needs VDDK in
    vddk_libdir; asking for nbdkit's own plugin names reader."""
    vm = inventory.find_vm(client, name="lab-vm-1")
    disk = inventory.inventory(client, vm).disks[0]
    assert datapath.check_vddk(VDDK_LIBDIR).reader is datapath.Reader.XMS
    with cbt.sync_snapshot(client, vm) as snap:
        with pytest.raises(DataPathError) as err, datapath.open_disk(client, vm, snap, disk, vddk_libdir=str(tmp_path)):
            pass
        assert err.value.parameter == "vddk_libdir" and "lib64/libvixDiskLib.so.N" in str(err.value)
        with (
            pytest.raises(DataPathError) as err,
            datapath.open_disk(client, vm, snap, disk, vddk_libdir=VDDK_LIBDIR, reader=datapath.Reader.NBDKIT_VDDK),
        ):
            pass
        assert err.value.parameter == "reader" and "Ubuntu do not ship it" in str(err.value)
    with pytest.raises(DataPathError) as err:
        datapath.check_vddk("/nonexistent/vddk")
    assert err.value.parameter == "vddk_libdir"


def test_the_vddk_thumbprint_is_the_certificate_of_the_login_session(client, lab):
    import hashlib
    import ssl

    der = ssl.PEM_cert_to_DER_cert(ssl.get_server_certificate((lab["hostname"], lab["port"])))
    digest = hashlib.sha1(der).hexdigest().upper()
    assert client.thumbprint == ":".join(digest[i : i + 2] for i in range(0, 40, 2))


def test_disks_are_ordered_as_the_vm_boots_them(client):
    """LSI Logic SAS boot disk beside PVSCSI, SATA and NVMe disks; then the VM's own boot order wins."""
    from pyVmomi import vim

    vm = inventory.find_vm(client, name="lab-vm-layout")
    dev = vim.vm.device
    stale = [d for d in vm.config.hardware.device if isinstance(d, (dev.VirtualDisk, dev.VirtualSCSIController,
             dev.VirtualSATAController, dev.VirtualNVMEController))]  # fmt: skip
    changes = [dev.VirtualDeviceSpec(operation="remove", device=d) for d in stale]
    controllers = {"pvscsi": dev.ParaVirtualSCSIController(key=-11, busNumber=1, sharedBus="noSharing"),
                   "sas": dev.VirtualLsiLogicSASController(key=-12, busNumber=0, sharedBus="noSharing"),
                   "nvme": dev.VirtualNVMEController(key=-13, busNumber=0),
                   "sata": dev.VirtualAHCIController(key=-14, busNumber=0)}  # fmt: skip
    changes += [dev.VirtualDeviceSpec(operation="add", device=c) for c in controllers.values()]
    client.wait_task(vm.ReconfigVM_Task(vim.vm.ConfigSpec(deviceChange=changes, bootOptions=vim.vm.BootOptions(
        bootOrder=[]))), "layout")  # fmt: skip
    keys = {}
    for kind in ("pvscsi", "nvme", "sas", "sata"):  # added in an order that is no boot order
        controller = next(d for d in vm.config.hardware.device if type(d) is type(controllers[kind]))
        keys[kind] = add_disk(client, vm, 16 << 20, controller_key=controller.key)
    order = [d.key for d in inventory.inventory(client, vm).disks]
    assert order == [keys["sata"], keys["sas"], keys["pvscsi"], keys["nvme"]]

    boot = vim.vm.BootOptions(bootOrder=[vim.vm.BootOptions.BootableDiskDevice(deviceKey=keys["nvme"])])
    client.wait_task(vm.ReconfigVM_Task(vim.vm.ConfigSpec(bootOptions=boot)), "boot order")
    order = [d.key for d in inventory.inventory(client, vm).disks]
    assert order == [keys["nvme"], keys["sata"], keys["sas"], keys["pvscsi"]]
