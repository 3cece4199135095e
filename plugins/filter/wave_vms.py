# Copyright: xms.warm_migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The VMs of a wave as the report matches them to migrations: by instance UUID, else by name."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping

DOCUMENTATION = r"""
name: wave_vms
short_description: The VMs of a play as the wave_report module takes them
version_added: 0.1.0
description:
  - For each inventory host, its VM's name (C(warm_migration_vm_name), else the host's name) and its
    instance UUID (C(warm_migration_vm_uuid)) when the inventory names one.
  - C(localhost) is no VM (as for the conversion_host filter), so a report played on C(localhost) alone
    gets an empty list, and so reports every migration of the target project.
options:
  _input:
    description: The inventory host names of the wave (C(ansible_play_hosts_all)).
    type: list
    elements: str
    required: true
  hostvars:
    description: The play's C(hostvars).
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Report the play's VMs
  xms.warm_migration.wave_report:
    wave: wave1
    vms: "{{ ansible_play_hosts_all | xms.warm_migration.wave_vms(hostvars) }}"
    path: /tmp/wave1.html
"""

RETURN = r"""
_value:
  description: One C(name) and C(uuid) (empty when not named) per host.
  type: list
  elements: dict
"""


def wave_vms(hosts: List[str], hostvars: Mapping[str, Any]) -> List[Dict[str, str]]:
    out = []
    for host in hosts:
        if host == "localhost":
            continue
        variables = hostvars.get(host) or {}
        out.append({
            "name": str(variables.get("warm_migration_vm_name") or host),
            "uuid": str(variables.get("warm_migration_vm_uuid") or ""),
        })  # fmt: skip
    return out


class FilterModule:
    def filters(self):
        return {"wave_vms": wave_vms}
