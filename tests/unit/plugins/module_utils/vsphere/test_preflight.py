"""Source preflight on inventories the lab cannot produce (vcsim panics on raw device mappings)."""

from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere.inventory import Disk, VmInventory, preflight


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


def test_failures_come_before_warnings():
    verdict = preflight(vm(snapshot_count=1, disks=[disk(disk_mode="independent_nonpersistent")]))
    assert verdict.status == "fail" and "independent" in verdict.reasons[0] and "snapshot" in verdict.reasons[1]
