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
  - Otherwise picks a member of the C(conversion_hosts) group, balanced over the VMs of the wave -
    the VMs that name none are taken in name order, each given the host with the fewest of the wave's
    VMs so far (pinned ones counted; ties go to the host first in name order). The same wave gives
    every VM the same host on every run, whatever C(--limit) runs a part of it, so a migration stays
    where its journals and locks are; an inventory of a whole vCenter does not crowd one wave onto a
    few hosts.
  - Without a C(conversion_hosts) group (or an empty one), C(localhost).
  - The VMs of the wave are the members of the inventory group O(wave) and the play's hosts
    (O(play_hosts)), outside the C(conversion_hosts) group, except C(localhost). A wave that is not a
    group (a pattern) is the play's hosts alone.
  - A VM run in another wave (or a group of VMs changed) can get another host. A move between syncs
    is safe (the record lives in Cinder; the new host syncs from the recorded change ids), but an
    interrupted sync's journal stays on the old host; pin C(warm_migration_conversion_host) (a dynamic
    inventory can compose it) to keep a VM on one host whatever the play.
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
  play_hosts:
    description: The play's hosts, C(ansible_play_hosts_all) (every batch of a C(serial) play).
    type: list
    elements: str
    required: true
  wave:
    description:
      - The play's wave, the inventory group its hosts come from (the playbooks' C(wave), C(vms) by default).
    type: str
    required: true
"""

EXAMPLES = r"""
- name: Sync on the VM's conversion host
  xms.warm_migration.block_sync:
    vm_name: "{{ inventory_hostname }}"
  delegate_to: >-
    {{ inventory_hostname | xms.warm_migration.conversion_host(hostvars, groups, ansible_play_hosts_all,
                                                               wave | default('vms')) }}
"""

RETURN = r"""
_value:
  description: The inventory host name of the conversion host.
  type: str
"""

GROUP = "conversion_hosts"
PINNED = "warm_migration_conversion_host"


def conversion_host(
    vm: str, hostvars: Mapping[str, Any], groups: Mapping[str, List[str]], play_hosts: List[str], wave: str
) -> str:
    """The conversion host of ``vm`` (see DOCUMENTATION)."""
    pinned = _pinned(hostvars, vm)
    if pinned:
        return pinned
    hosts = sorted(groups.get(GROUP) or [])
    if not hosts:
        return "localhost"
    load: Dict[str, int] = {host: 0 for host in hosts}
    vms = sorted((set(play_hosts or []) | set(groups.get(wave) or [])) - set(hosts) - {"localhost"})
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
    return min(hosts, key=lambda host: (load[host], host))  # a VM outside the wave


def _pinned(hostvars: Mapping[str, Any], vm: str) -> str:
    try:
        return str(hostvars[vm].get(PINNED) or "")
    except (KeyError, AttributeError):
        return ""


class FilterModule:
    def filters(self):
        return {"conversion_host": conversion_host}
