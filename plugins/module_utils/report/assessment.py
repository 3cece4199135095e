"""The assessment of an estate: per VM its verdict and shape, as CSV (for a spreadsheet) and as one HTML page.

Every value comes from vCenter, where anyone who may create a VM names it: the page escapes each one, and a
CSV cell that a spreadsheet would read as a formula (``=``, ``+``, ``-``, ``@``) is quoted as text.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Dict, List, Mapping

from ansible_collections.xms.warm_migration.plugins.module_utils.migration.record import format_time
from ansible_collections.xms.warm_migration.plugins.module_utils.report.page import document, escaped
from ansible_collections.xms.warm_migration.plugins.module_utils.report.units import human_bytes

VERDICTS = ("fail", "warn", "pass")  # worst first: the order of the page
COLUMNS = ["vm", "verdict", "reasons", "power_state", "firmware", "guest_os", "guest_id", "hw_version", "vcpus",
           "memory_mb", "disk_count", "disks_total_bytes", "disks", "nics", "snapshot_count", "oldest_snapshot",
           "cbt_enabled", "tools_running", "vtpm", "instance_uuid"]  # fmt: skip


@dataclass
class AssessedVM:
    """One VM of the assessment; ``vm`` is empty when it could not be read (the reasons say why)."""

    name: str
    verdict: str
    reasons: List[str] = field(default_factory=list)
    vm: Mapping[str, Any] = field(default_factory=dict)

    def row(self) -> Dict[str, Any]:
        vm = self.vm
        return {
            "vm": self.name,
            "verdict": self.verdict.capitalize(),
            "reasons": "; ".join(self.reasons),
            "power_state": vm.get("power_state", ""),
            "firmware": vm.get("firmware", ""),
            "guest_os": vm.get("guest_full_name", ""),
            "guest_id": vm.get("guest_id", ""),
            "hw_version": vm.get("hw_version", ""),
            "vcpus": vm.get("vcpus", ""),
            "memory_mb": vm.get("memory_mb", ""),
            "disk_count": len(vm["disks"]) if "disks" in vm else "",
            "disks_total_bytes": vm.get("disks_total_bytes", ""),
            "disks": "; ".join(_disk_text(d) for d in vm.get("disks", [])),
            "nics": "; ".join(_nic_text(n) for n in vm.get("nics", [])),
            "snapshot_count": vm.get("snapshot_count", ""),
            "oldest_snapshot": vm.get("oldest_snapshot") or "",
            "cbt_enabled": _yes_no(vm.get("cbt_enabled")),
            "tools_running": _yes_no(vm.get("tools_running")),
            "vtpm": _yes_no(vm.get("vtpm")),
            "instance_uuid": vm.get("instance_uuid", ""),
        }


def _disk_text(disk: Mapping[str, Any]) -> str:
    """``Hard disk 2 10.0 GiB on ds02 (nvme, independent_persistent, RDM virtualMode)``: what a disk's move needs."""
    notes = [disk["bus"]]
    if disk["disk_mode"] != "persistent":
        notes.append(disk["disk_mode"])
    if disk.get("rdm_mode"):
        notes.append(f"RDM {disk['rdm_mode']}")
    return f"{disk['label']} {human_bytes(disk['capacity_bytes'])} on {disk['datastore']} ({', '.join(notes)})"


def _nic_text(nic: Mapping[str, Any]) -> str:
    addresses = f" {', '.join(nic['addresses'])}" if nic.get("addresses") else ""
    return f"{nic['mac']} {nic['adapter']} on {nic['network']}{addresses}"


def _yes_no(value: Any) -> str:
    return "" if value is None else ("yes" if value else "no")


def ordered(vms: List[AssessedVM]) -> List[AssessedVM]:
    return sorted(vms, key=lambda v: (VERDICTS.index(v.verdict), v.name))


def render_csv(vms: List[AssessedVM]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for vm in ordered(vms):
        writer.writerow({key: _cell(value) for key, value in vm.row().items()})
    return out.getvalue()


def _cell(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def verdict_counts(vms: List[AssessedVM]) -> Dict[str, int]:
    counts = Counter(vm.verdict for vm in vms)
    return {v: counts[v] for v in VERDICTS}


def disks_total_bytes(vms: List[AssessedVM]) -> int:
    return sum(vm.vm.get("disks_total_bytes", 0) for vm in vms)


def render_html(title: str, made_at: datetime, vms: List[AssessedVM]) -> str:
    counts, total = verdict_counts(vms), disks_total_bytes(vms)
    head = ["VM", "Verdict", "Reasons", "Power", "Firmware", "Guest OS", "vCPUs", "Memory", "Disks", "Total",
            "NICs", "Snapshots", "CBT"]  # fmt: skip
    rows = []
    for vm in ordered(vms):
        r = vm.row()
        reasons = "".join(f"<li>{escaped(reason)}</li>" for reason in vm.reasons)
        cells = [
            f'<td class="name">{escaped(r["vm"])}</td>',
            f'<td class="text verdict-{escaped(vm.verdict)}">{escaped(r["verdict"])}</td>',
            f'<td class="text">{"<ul>" + reasons + "</ul>" if reasons else ""}</td>',
            f'<td class="text">{escaped(r["power_state"])}</td>',
            f'<td class="text">{escaped(r["firmware"])}</td>',
            f'<td class="text">{escaped(r["guest_os"])}</td>',
            f"<td>{escaped(r['vcpus'])}</td>",
            f"<td>{escaped(human_bytes(r['memory_mb'] << 20) if r['memory_mb'] != '' else '')}</td>",
            f'<td class="text">{escaped(r["disks"])}</td>',
            f"<td>{escaped(human_bytes(r['disks_total_bytes']) if r['disks_total_bytes'] != '' else '')}</td>",
            f'<td class="text">{escaped(r["nics"])}</td>',
            f"<td>{escaped(r['snapshot_count'])}</td>",
            f'<td class="text">{escaped(r["cbt_enabled"])}</td>',
        ]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    summary = ", ".join(f"{counts[v]} {v.capitalize()}" for v in VERDICTS)
    style = (".verdict-fail { color: #cf222e; } .verdict-warn { color: #9a6700; } .verdict-pass { color: #1a7f37; }"
             " ul { margin: 0; padding-left: 1.2em; }")  # fmt: skip
    return document(title, [
        f'<p class="summary"><span>{len(vms)} VMs ({escaped(summary)})</span>'
        f"<span>{escaped(human_bytes(total))} of disks</span><span>made {escaped(format_time(made_at))}</span></p>",
        "<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>",
        *rows,
        "</table>",
        "<p class=\"empty\">Fail blocks a warm migration until fixed; Warn is worth reading before the seed. The"
        " target's checks (flavor, volume types, networks, quota) are the preflight's.</p>",
    ], style)  # fmt: skip
