# Copyright: xms.warm_migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The end of a cutover run: one line per VM, what the operator reports to the application owners."""

from __future__ import annotations

from typing import Any, List, Mapping

from ansible_collections.xms.warm_migration.plugins.module_utils.migration.record import CUTOVER_STEP_NAMES
from ansible_collections.xms.warm_migration.plugins.module_utils.report.units import human_duration

DOCUMENTATION = r"""
name: cutover_summary
short_description: One line per VM at the end of a cutover - downtime, instance, where the time went
version_added: 0.1.0
description:
  - For each host, from its registered C(cutover_result) - the downtime, the instance, the seconds of
    each step and what proved the instance runs; a VM whose cutover failed, with the error; a VM that did
    not get its turn, as such.
options:
  _input:
    description: The VMs' inventory host names (C(ansible_play_hosts_all)).
    type: list
    elements: str
    required: true
  hostvars:
    description: The play's C(hostvars).
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Sum up the wave
  ansible.builtin.debug:
    msg: "{{ ansible_play_hosts_all | xms.warm_migration.cutover_summary(hostvars) }}"
  run_once: true
"""

RETURN = r"""
_value:
  description: One line per VM.
  type: list
  elements: str
"""


def _line(host: str, variables: Mapping[str, Any]) -> str:
    name = variables.get("warm_migration_vm_name") or host
    result = variables.get("cutover_result")
    if not isinstance(result, Mapping) or result.get("skipped"):
        return f"{name}: not cut over (the run stopped before its turn)"
    if result.get("failed"):
        return f"{name}: FAILED - {result.get('msg', 'no message')}"
    downtime = result.get("downtime_seconds")
    down = f"down {human_duration(downtime)}" if downtime is not None else "not shut down"
    instance = (result.get("migration") or {}).get("instance_id") or "-"
    steps = ", ".join(
        f"{CUTOVER_STEP_NAMES.get(step, step)} {human_duration(s)}" for step, s in (result.get("timings") or {}).items()
    )
    validation = (result.get("migration") or {}).get("validation")
    return (
        f"{name}: {down}, instance {instance}"
        + (f" ({steps})" if steps else "")
        + (f"; validation {validation}" if validation else "")
    )


def cutover_summary(hosts: List[str], hostvars: Mapping[str, Any]) -> List[str]:
    return [_line(host, hostvars.get(host) or {}) for host in hosts]


class FilterModule:
    def filters(self):
        return {"cutover_summary": cutover_summary}
