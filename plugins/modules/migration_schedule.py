#!/usr/bin/python
# Copyright: xms.warm_migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pause, resume, or change the cadence of a migration's incremental syncs."""

from __future__ import annotations

DOCUMENTATION = r"""
module: migration_schedule
short_description: Pause or resume a warm migration's syncs, or change their cadence
version_added: 0.1.0
description:
  - Sets the C(paused) flag and the cadence in the migration record. M(xms.warm_migration.block_sync)
    skips a paused migration, and with C(only_when_due) syncs only when the cadence says a sync is due.
  - A sync that is running finishes; pausing stops the next ones. Cutover ignores the pause.
requirements:
  - python >= 3.9
seealso:
  - module: xms.warm_migration.block_sync
  - module: xms.warm_migration.migration_info
author:
  - xms.warm_migration developers (@xms)
extends_documentation_fragment:
  - xms.warm_migration.openstack
  - xms.warm_migration.migration_select
options:
  paused:
    description:
      - C(true) pauses the migration's syncs, C(false) resumes them.
    type: bool
  cadence:
    description:
      - How often syncs are due.
    type: str
    choices: [manual, 15m, hourly, daily]
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: full
"""

EXAMPLES = r"""
- name: Pause web01's syncs during the month-end batch
  xms.warm_migration.migration_schedule:
    cloud: target
    vm_name: web01
    paused: true

- name: Resume them, every 15 minutes
  xms.warm_migration.migration_schedule:
    cloud: target
    vm_name: web01
    paused: false
    cadence: 15m
"""

RETURN = r"""
migration:
  description: The migration's metrics after the change (see M(xms.warm_migration.migration_info)).
  returned: always
  type: dict
  sample: {"paused": true, "cadence": "hourly", "phase": "ready"}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.xms.warm_migration.plugins.module_utils import argument_spec as specs
from ansible_collections.xms.warm_migration.plugins.module_utils.migration import params as mparams
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.info import select, set_schedule
from ansible_collections.xms.warm_migration.plugins.module_utils.module_base import run


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            **specs.openstack_argument_spec(),
            "migration_id": {"type": "str"},
            "vm_uuid": {"type": "str"},
            "vm_name": {"type": "str"},
            "paused": {"type": "bool"},
            "cadence": {"type": "str", "choices": ["manual", "15m", "hourly", "daily"]},
        },
        required_one_of=[["migration_id", "vm_uuid", "vm_name"], ["paused", "cadence"]],
        mutually_exclusive=[["migration_id", "vm_uuid", "vm_name"]],
        supports_check_mode=True,
    )
    p = module.params

    def body():
        openstack = mparams.connect_openstack(p)
        found, _malformed = select(
            openstack, migration_id=p["migration_id"], vm_uuid=p["vm_uuid"], vm_name=p["vm_name"]
        )
        state = found[0]
        changed, before, after = set_schedule(
            openstack, state, paused=p["paused"], cadence=p["cadence"], check_mode=module.check_mode
        )
        result = {"changed": changed, "migration": state.metrics()}
        if module._diff:
            result["diff"] = {"before": before, "after": after}
        return result

    run(module, "change the schedule of the migration", body)


if __name__ == "__main__":
    main()
