"""One run's migration: the adapters, the source VM and its inventory, read once.

Every lifecycle step (initialize, sync, cutover, rollback, test, seed export and import) starts
from the same three things: a vCenter session, the source VM and what vSphere says about it
(name, disks, NICs, firmware). A module builds them once (params.module_context) and hands them
on; nothing below reads the inventory again for the same run. What may change while a run goes
on (a disk's size, its change id, the disk set itself) is read from the run's snapshot instead,
which is the state the copy actually reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere import inventory as vs_inventory


def migration_id_for(inv: vs_inventory.VmInventory) -> str:
    """One migration per source VM: its vSphere instance UUID never changes, unlike its name."""
    return f"vm-{inv.instance_uuid}"


@dataclass(frozen=True)
class MigrationContext:
    """The source VM of one run, its inventory as read at the run's start, and the connected adapters.

    ``openstack`` is None only for a run that never touches the cloud (a seed export)."""

    vsphere: Any  # VSphereClient
    vm: Any  # vim.VirtualMachine
    inventory: vs_inventory.VmInventory
    openstack: Optional[Any] = None  # OpenStackClient

    @classmethod
    def read(cls, vsphere, vm, openstack=None) -> MigrationContext:
        """The context of ``vm`` now: its inventory is read here, once."""
        return cls(vsphere=vsphere, vm=vm, inventory=vs_inventory.inventory(vsphere, vm), openstack=openstack)

    @property
    def migration_id(self) -> str:
        return migration_id_for(self.inventory)

    @property
    def vm_name(self) -> str:
        return self.inventory.name
