#!/usr/bin/python
# Copyright: xms.warm_migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Report the state and metrics of warm migrations from their durable record."""

from __future__ import annotations

DOCUMENTATION = r"""
module: migration_info
short_description: Report warm migrations - phase, last sync, lag, bytes, sync count, rate
version_added: 0.1.0
description:
  - Reads the migration record that every migration keeps on its target volumes, so it needs only the
    target cloud, and shows a sync that is running right now (its progress and rate).
  - Without O(migration_id), O(vm_uuid) or O(vm_name), reports every migration in the project.
requirements:
  - python >= 3.9
seealso:
  - module: xms.warm_migration.wave_report
  - module: xms.warm_migration.migration_schedule
author:
  - xms.warm_migration developers (@xms)
extends_documentation_fragment:
  - xms.warm_migration.openstack
  - xms.warm_migration.migration_select
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: Reads only.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
"""

EXAMPLES = r"""
- name: Report every migration of the wave's project
  xms.warm_migration.migration_info:
    cloud: target
  register: report

- name: Show lag per VM
  ansible.builtin.debug:
    msg: "{{ item.vm_name }}: {{ item.phase }}, lag {{ item.lag_seconds }}s"
  loop: "{{ report.migrations }}"
"""

RETURN = r"""
migrations:
  description: One entry per migration.
  returned: always
  type: list
  elements: dict
  contains:
    migration_id:
      description: The migration's id.
      type: str
      sample: vm-5032c8a5-9c5b-0c4f-8f6e-2b9e8a1f4c11
    vm_name:
      description: The source VM's name.
      type: str
      sample: web01
    phase:
      description: C(initializing), C(seeding), C(ready), C(syncing), C(cutover) or C(completed).
      type: str
      sample: ready
    last_sync:
      description: When the snapshot of the last complete sync was taken (UTC, ISO 8601).
      type: str
      sample: "2026-11-22T15:04:05Z"
    lag_seconds:
      description: Seconds since C(last_sync) - what a cutover now would have to catch up.
      type: int
      sample: 840
    bytes_full:
      description: Bytes copied by the seed and any full resyncs.
      type: int
      sample: 10737418240
    bytes_incr:
      description: Bytes copied by all incremental syncs together.
      type: int
      sample: 73400320
    sync_count:
      description: Completed syncs, the seed included.
      type: int
      sample: 5
    rate_bytes_per_second:
      description: Copy rate of the last sync, or of the running one.
      type: float
      sample: 104857600.0
    paused:
      description: Whether incremental syncs are paused.
      type: bool
      sample: false
    cadence:
      description: How often syncs are due.
      type: str
      sample: hourly
    busy:
      description: Whether a sync or cutover is running now.
      type: bool
      sample: false
    progress:
      description: Bytes done and total of the running sync, or null.
      type: dict
      sample: {"done": 1048576, "total": 4194304}
    downtime_seconds:
      description:
        - Seconds from the guest going down at cutover to its instance being ACTIVE; while the cutover
          runs, so far. Null before a cutover shut the guest down.
      type: int
      sample: 312
    projected_downtime_seconds:
      description:
        - Seconds a cutover starting now would keep the VM down - the final delta (the guest's changes since
          the last sync, each disk's at most its capacity, at the syncs' copy rate) plus conversion plus
          instance step, as the conversion host measured them (defaults of 300 s and 30 s until it has). Null
          before an incremental sync, and during and after the cutover.
      type: int
      sample: 95
    cutover_timings:
      description:
        - Seconds each cutover step took, from the end of the step before it, or null.
        - Steps are C(shutdown), C(final_sync), C(converted), C(boot_checked), C(instance), C(completed).
      type: dict
      sample: {"shutdown": 21, "final_sync": 14, "converted": 240, "instance": 19}
    cutover_marks:
      description:
        - When each point of the cutover was reached (UTC, ISO 8601), or null before a cutover began -
          C(started), C(shutdown) (the guest is down), C(final_sync), C(converted), C(boot_checked),
          C(instance) (ACTIVE), C(completed).
      type: dict
      sample: {"started": "2026-11-24T04:00:00Z", "shutdown": "2026-11-24T04:00:21Z"}
    history:
      description:
        - The last syncs, the oldest first (at most 6 are kept in the record) - the time of each one's
          snapshot, its kind (C(seed), C(incremental), C(full_resync), C(resume)), the bytes it copied, how
          long it took in all and how long of that the copy ran.
      type: list
      elements: dict
      sample: [{"at": "2026-11-24T03:00:00Z", "kind": "incremental", "bytes": 73400320, "duration_seconds": 21.4}]
    test:
      description:
        - The last test migration (see M(xms.warm_migration.migration_test)) - when its clones were taken, the
          result (C(passed), C(failed), C(removed)), its server, seconds per step - or null.
      type: dict
      sample: {"at": "2026-11-24T04:00:00Z", "result": "passed", "instance_id": "5d1c...", "timings": {"cloned": 12}}
    disks:
      description: Per disk - key, label, volume id, recorded change id.
      type: list
      elements: dict
      sample: [{"disk_key": 2000, "volume_id": "4f1c...", "change_id": "52 3f .../12"}]
malformed:
  description:
    - Volumes carrying an C(xms_) record that cannot be used - hand-made, copied from another volume, or
      unparsable - with the reason. They are not counted as disks of any migration; the others are listed.
  returned: always
  type: list
  elements: dict
  sample: [{"migration_id": "vm-5032", "volume_ids": ["7d2e"], "reason": "its record was copied from volume 4f1c"}]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.xms.warm_migration.plugins.module_utils import argument_spec as specs
from ansible_collections.xms.warm_migration.plugins.module_utils.migration import params as mparams
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.info import select
from ansible_collections.xms.warm_migration.plugins.module_utils.module_base import run


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            **specs.openstack_argument_spec(),
            "migration_id": {"type": "str"},
            "vm_uuid": {"type": "str"},
            "vm_name": {"type": "str"},
        },
        mutually_exclusive=[["migration_id", "vm_uuid", "vm_name"]],
        supports_check_mode=True,
    )

    def body():
        openstack = mparams.connect_openstack(module.params)
        found, malformed = select(
            openstack,
            migration_id=module.params["migration_id"],
            vm_uuid=module.params["vm_uuid"],
            vm_name=module.params["vm_name"],
        )
        for problem in malformed:
            module.warn(
                f"volume(s) {', '.join(problem.volume_ids)} of migration {problem.migration_id}: {problem.reason}"
            )
        return {
            "changed": False,
            "migrations": [s.metrics() for s in found],
            "malformed": [m.as_dict() for m in malformed],
        }

    run(module, "read the migration records", body)


if __name__ == "__main__":
    main()
