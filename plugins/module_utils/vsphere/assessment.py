"""What an assessment says of one source VM: its shape as vCenter reports it and the source preflight's verdict.

Read-only and vCenter-only, so it runs over a whole estate before any cloud is chosen; the target's checks
(flavor, volume types, networks, quota) are the preflight's, once a wave has its settings.
"""

from __future__ import annotations

from typing import Any, Dict

from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere import inventory as vs_inventory


def assess(client, vm) -> Dict[str, Any]:
    """The VM's facts and verdict, in the units the collection's results use (``_bytes``, ``_mb``)."""
    inv = vs_inventory.inventory(client, vm)
    verdict = vs_inventory.preflight(inv, vs_inventory.datastore_space(client, vm))
    return {"vm": describe(inv), "verdict": {"status": verdict.status, "reasons": verdict.reasons}}


def describe(inv: vs_inventory.VmInventory) -> Dict[str, Any]:
    return {
        "name": inv.name,
        "moref": inv.moref,
        "instance_uuid": inv.instance_uuid,
        "power_state": inv.power_state,
        "firmware": inv.firmware,
        "guest_id": inv.guest_id,
        "guest_full_name": inv.guest_full_name or inv.guest_id,
        "hw_version": inv.hw_version,
        "vcpus": inv.vcpus,
        "memory_mb": inv.memory_mb,
        "tools_running": inv.tools_running,
        "cbt_enabled": inv.cbt_enabled,
        "vtpm": inv.vtpm,
        "snapshot_count": inv.snapshot_count,
        "oldest_snapshot": inv.oldest_snapshot.isoformat() if inv.oldest_snapshot else None,
        "disks": [
            {
                "key": d.key,
                "label": d.label,
                "capacity_bytes": d.capacity,
                "datastore": d.datastore,
                "bus": d.bus,
                "thin": d.thin,
                "disk_mode": d.disk_mode,
                "rdm_mode": d.rdm_mode,
            }
            for d in inv.disks
        ],
        "disks_total_bytes": sum(d.capacity for d in inv.disks),
        "nics": [
            {"mac": n.mac, "network": n.network, "adapter": n.adapter, "addresses": list(n.addresses)} for n in inv.nics
        ],
    }
