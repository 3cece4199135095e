"""What an assessment returns of a VM: its shape in the collection's units, the total of its disks."""

from datetime import datetime, timezone

from test_preflight import disk, vm

from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere.assessment import describe
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere.inventory import Nic


def test_the_disks_are_described_in_bytes_with_their_total_and_the_snapshots_dated():
    described = describe(vm(disks=[disk(), disk(key=2001, label="Hard disk 2", capacity=3 << 30)], snapshot_count=2,
                            oldest_snapshot=datetime(2026, 10, 1, tzinfo=timezone.utc),
                            nics=[Nic(key=4000, mac="00:50:56:aa:bb:01", network="VM Network", adapter="vmxnet3",
                                      addresses=("10.0.0.15/24",))]))  # fmt: skip
    assert [d["capacity_bytes"] for d in described["disks"]] == [1 << 30, 3 << 30]
    assert described["disks_total_bytes"] == 4 << 30
    assert (described["snapshot_count"], described["oldest_snapshot"]) == (2, "2026-10-01T00:00:00+00:00")
    assert described["nics"] == [{"mac": "00:50:56:aa:bb:01", "network": "VM Network", "adapter": "vmxnet3",
                                  "addresses": ["10.0.0.15/24"]}]  # fmt: skip
    assert described["guest_full_name"] == "debian12_64Guest"  # vCenter's id when the VM names no full name
