"""Source preflight on inventories the lab cannot produce (vcsim panics on raw device mappings, never
needs consolidation, and its datastore is the lab's file system, which a test must not fill)."""

from datetime import datetime, timedelta, timezone

from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere import inventory
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere.inventory import (
    DatastoreSpace,
    Disk,
    VmInventory,
)

GiB = 1 << 30
ROOMY = [DatastoreSpace("ds", capacity=1000 * GiB, free=500 * GiB)]
NOW = datetime(2026, 12, 4, 12, 0, tzinfo=timezone.utc)


def preflight(inv, space=None):
    return inventory.preflight(inv, ROOMY if space is None else space, now=NOW)


def disk(**overrides):
    values = dict(key=2000, label="Hard disk 1", capacity=1 << 30, backing_file="[ds] vm/vm.vmdk", datastore="ds",
                  controller="VirtualLsiLogicController", unit=0, thin=True, disk_mode="persistent", rdm_mode=None,
                  change_id="52 aa/1")  # fmt: skip
    values.update(overrides)
    return Disk(**values)


def vm(**overrides):
    values = dict(name="web01", moref="vm-1", instance_uuid="u", vcpus=2, memory_mb=4096, firmware="bios",
                  guest_id="debian12_64Guest", hw_version=13, tools_running=True, power_state="poweredOn",
                  cbt_enabled=True, snapshot_count=0, disks=[disk()], nics=[])  # fmt: skip
    values.update(overrides)
    return VmInventory(**values)


def test_a_plain_vm_passes():
    assert preflight(vm()).status == "pass"


def test_a_physical_rdm_fails_but_a_virtual_one_does_not():
    verdict = preflight(vm(disks=[disk(), disk(key=2001, label="Hard disk 2", rdm_mode="physicalMode")]))
    assert verdict.status == "fail" and "Hard disk 2 is a physical-mode RDM" in verdict.reasons[0]
    assert preflight(vm(disks=[disk(rdm_mode="virtualMode")])).status == "pass"


def test_old_virtual_hardware_fails():
    verdict = preflight(vm(hw_version=4))
    assert verdict.status == "fail" and "hardware 4" in verdict.reasons[0]


def test_snapshots_and_stopped_tools_warn():
    verdict = preflight(vm(snapshot_count=2, tools_running=False))
    assert verdict.status == "warn" and len(verdict.reasons) == 2


def test_snapshots_are_counted_and_dated():
    verdict = preflight(vm(snapshot_count=3, oldest_snapshot=NOW - timedelta(days=40, hours=3)))
    assert verdict.status == "warn"
    assert "3 snapshot(s), the oldest taken 2026-10-25 (40 day(s) ago)" in verdict.reasons[0]


def test_disks_that_need_consolidation_fail():
    verdict = preflight(vm(consolidation_needed=True))
    assert verdict.status == "fail" and "consolidat" in verdict.reasons[0]


def test_datastore_space_for_the_seed_snapshot_delta():
    """Under 10% of the VM's disks free on their datastore fails, under 25% warns; other datastores do not count."""
    big = vm(disks=[disk(capacity=100 * GiB), disk(key=2001, label="Hard disk 2", capacity=100 * GiB, datastore="b")])
    tight = preflight(big, [DatastoreSpace("ds", 1000 * GiB, 9 * GiB), DatastoreSpace("b", 1000 * GiB, 50 * GiB)])
    assert tight.status == "fail" and len(tight.reasons) == 1
    assert "datastore 'ds' has 9.0 GiB free" in tight.reasons[0] and "at least 10.0 GiB" in tight.reasons[0]
    low = preflight(big, [DatastoreSpace("ds", 1000 * GiB, 20 * GiB), DatastoreSpace("b", 1000 * GiB, 50 * GiB)])
    assert low.status == "warn" and "datastore 'ds' has 20.0 GiB free" in low.reasons[0]
    unrelated = [DatastoreSpace("ds", 1000 * GiB, 500 * GiB), DatastoreSpace("b", 1000 * GiB, 50 * GiB),
                 DatastoreSpace("iso", 10 * GiB, 0)]  # fmt: skip
    assert preflight(big, unrelated).status == "pass"


def test_failures_come_before_warnings():
    verdict = preflight(vm(snapshot_count=1, disks=[disk(disk_mode="independent_nonpersistent")]))
    assert verdict.status == "fail" and "independent" in verdict.reasons[0] and "snapshot" in verdict.reasons[1]


def test_a_guest_os_virt_v2v_cannot_convert_warns_and_linux_declared_as_other_does_not():
    verdict = preflight(vm(guest_id="freebsd13_64Guest", guest_full_name="FreeBSD 13 (64-bit)"))
    assert verdict.status == "warn" and "'FreeBSD 13 (64-bit)'" in verdict.reasons[0]
    assert preflight(vm(guest_id="otherGuest64")).status == "warn"
    for convertible in ("other5xLinux64Guest", "rhel9_64Guest", "windows2019srv_64Guest", "ubuntu64Guest"):
        assert preflight(vm(guest_id=convertible)).status == "pass", convertible
