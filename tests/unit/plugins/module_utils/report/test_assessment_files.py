"""The assessment's files: one CSV row and one table row per VM, worst verdicts first, every vCenter value
escaped in the page and never read as a formula by a spreadsheet."""

import csv
import io
from datetime import datetime, timezone

from ansible_collections.xms.warm_migration.plugins.module_utils.report import assessment
from ansible_collections.xms.warm_migration.plugins.module_utils.report.assessment import AssessedVM

NOW = datetime(2026, 12, 5, 3, 0, tzinfo=timezone.utc)
VM = {
    "name": "web01", "power_state": "poweredOn", "firmware": "efi", "guest_id": "rhel9_64Guest",
    "guest_full_name": "Red Hat Enterprise Linux 9 (64-bit)", "hw_version": 19, "vcpus": 2, "memory_mb": 4096,
    "tools_running": True, "cbt_enabled": False, "vtpm": False, "snapshot_count": 1,
    "oldest_snapshot": "2026-10-01T08:00:00+00:00", "instance_uuid": "5032c8a5",
    "disks": [
        {"key": 2000, "label": "Hard disk 1", "capacity_bytes": 40 << 30, "datastore": "ds01", "bus": "scsi",
         "thin": True, "disk_mode": "persistent", "rdm_mode": None},
        {"key": 2001, "label": "Hard disk 2", "capacity_bytes": 10 << 30, "datastore": "ds02", "bus": "nvme",
         "thin": False, "disk_mode": "independent_persistent", "rdm_mode": "virtualMode"},
    ],
    "disks_total_bytes": 50 << 30,
    "nics": [{"mac": "00:50:56:aa:bb:01", "network": "VM Network", "adapter": "vmxnet3",
              "addresses": ["10.0.0.15/24"]}],
}  # fmt: skip


def rows(vms):
    return list(csv.DictReader(io.StringIO(assessment.render_csv(vms))))


def test_a_row_carries_the_vm_its_disks_with_their_total_and_its_nics():
    [row] = rows([AssessedVM("web01", "warn", ["the VM has 1 snapshot(s)"], VM)])
    assert (row["verdict"], row["reasons"], row["firmware"], row["guest_os"]) == (
        "Warn",
        "the VM has 1 snapshot(s)",
        "efi",
        "Red Hat Enterprise Linux 9 (64-bit)",
    )
    assert (row["disk_count"], row["disks_total_bytes"]) == ("2", str(50 << 30))
    assert row["disks"] == (
        "Hard disk 1 40.0 GiB on ds01 (scsi); "
        "Hard disk 2 10.0 GiB on ds02 (nvme, independent_persistent, RDM virtualMode)"
    )
    assert row["nics"] == "00:50:56:aa:bb:01 vmxnet3 on VM Network 10.0.0.15/24"
    assert (row["snapshot_count"], row["cbt_enabled"], row["tools_running"]) == ("1", "no", "yes")


def test_worst_verdicts_come_first_and_a_vm_not_read_keeps_its_reason():
    vms = [
        AssessedVM("a", "pass", vm=VM),
        AssessedVM("b", "fail", ["no VM is named 'b'"]),
        AssessedVM("c", "warn", ["x"], VM),
    ]
    assert [(r["vm"], r["verdict"]) for r in rows(vms)] == [("b", "Fail"), ("c", "Warn"), ("a", "Pass")]
    assert rows(vms)[0]["reasons"] == "no VM is named 'b'" and rows(vms)[0]["firmware"] == ""


def test_a_cell_a_spreadsheet_would_run_as_a_formula_is_written_as_text():
    [row] = rows([AssessedVM('=HYPERLINK("http://x")', "pass", vm={**VM, "firmware": "@SUM(1)"})])
    assert row["vm"] == '\'=HYPERLINK("http://x")' and row["firmware"] == "'@SUM(1)"


def test_the_page_escapes_every_value_and_counts_the_verdicts():
    page = assessment.render_html("Estate <1>", NOW, [AssessedVM("<script>x</script>", "fail", ["a <b> reason"], VM),
                                                      AssessedVM("web02", "pass", vm=VM)])  # fmt: skip
    assert "<script>x" not in page and "&lt;script&gt;x&lt;/script&gt;" in page
    assert "a &lt;b&gt; reason" in page and "Estate &lt;1&gt;" in page
    assert "2 VMs (1 Fail, 0 Warn, 1 Pass)" in page and "100.0 GiB of disks" in page
    assert "default-src 'none'" in page
