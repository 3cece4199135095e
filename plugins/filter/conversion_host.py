# Copyright: xms.warm_migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which conversion host copies a VM: the one the inventory names, else one picked from the group."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping

DOCUMENTATION = r"""
name: conversion_host
short_description: The conversion host of a VM, picked from the conversion_hosts group when it names none
version_added: 0.1.0
description:
  - Returns the VM's C(warm_migration_conversion_host) when it has one.
  - Otherwise picks a member of the C(conversion_hosts) group, balanced by the VMs already assigned
    to each. The VMs that name none are taken in name order, each given the host with the fewest VMs
    so far (ties go to the host first in name order). The same inventory gives every VM the same
    host on every run, so a migration stays where its journals and locks are.
  - Without a C(conversion_hosts) group (or an empty one), C(localhost).
  - The VMs are the inventory's hosts outside the C(conversion_hosts) group, except C(localhost).
  - Adding VMs or conversion hosts can move VMs that name none. A move between syncs is safe (the
    record lives in Cinder; the new host syncs from the recorded change ids), but an interrupted
    sync's journal stays on the old host; pin C(warm_migration_conversion_host) before changing a
    running wave's inventory.
options:
  _input:
    description: The VM's inventory host name (C(inventory_hostname)).
    type: str
    required: true
  hostvars:
    description: The play's C(hostvars).
    type: dict
    required: true
  groups:
    description: The play's C(groups).
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Sync on the VM's conversion host
  xms.warm_migration.block_sync:
    vm_name: "{{ inventory_hostname }}"
  delegate_to: "{{ inventory_hostname | xms.warm_migration.conversion_host(hostvars, groups) }}"
"""

RETURN = r"""
_value:
  description: The inventory host name of the conversion host.
  type: str
"""

GROUP = "conversion_hosts"
PINNED = "warm_migration_conversion_host"


def conversion_host(vm: str, hostvars: Mapping[str, Any], groups: Mapping[str, List[str]]) -> str:
    """The conversion host of ``vm`` (see DOCUMENTATION)."""
    pinned = _pinned(hostvars, vm)
    if pinned:
        return pinned
    hosts = sorted(groups.get(GROUP) or [])
    if not hosts:
        return "localhost"
    load: Dict[str, int] = {host: 0 for host in hosts}
    vms = sorted(set(groups.get("all") or []) - set(hosts) - {"localhost"})
    for other in vms:
        chosen = _pinned(hostvars, other)
        if chosen in load:
            load[chosen] += 1
    for other in vms:
        if _pinned(hostvars, other):
            continue
        chosen = min(hosts, key=lambda host: (load[host], host))
        if other == vm:
            return chosen
        load[chosen] += 1
    return min(hosts, key=lambda host: (load[host], host))  # a VM outside the inventory's hosts


def _pinned(hostvars: Mapping[str, Any], vm: str) -> str:
    try:
        return str(hostvars[vm].get(PINNED) or "")
    except (KeyError, AttributeError):
        return ""


class FilterModule:
    def filters(self):
        return {"conversion_host": conversion_host}
