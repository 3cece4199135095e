#!/usr/bin/python
# Copyright: xms.warm_migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Seed or incrementally sync the volumes of a warm migration from a snapshot of the running VM."""

from __future__ import annotations

DOCUMENTATION = r"""
module: block_sync
short_description: Copy a running VM's disks (all, or only what changed) into its migration volumes
version_added: 0.1.0
description:
  - Takes one snapshot of the source VM (all disks at one point in time), asks vSphere which areas of
    each disk changed since the change id recorded for its volume (all allocated areas for the seed),
    copies only those into the Cinder volumes at the same offsets, and removes the snapshot.
  - The disks are copied at once (see O(parallel_disks)), all from the one snapshot. A disk's change id
    advances only after its data is written and flushed. A sync that stops part-way (killed, or one disk
    failed, which stops the others) is resumed by the next run from each disk's journal, not started over.
  - A disk with nothing changed costs no attachment and no nbdkit; a sync of an idle VM is a snapshot,
    one query per disk, the snapshot's removal and the record.
  - When CBT was reset on the source, the disk is copied whole, with a warning.
  - Refuses while another sync or the cutover of the same migration runs; skips a completed migration.
  - Honors pause (see M(xms.warm_migration.migration_schedule)); with O(only_when_due) it syncs only
    when the migration's cadence says a sync is due, so one frequent schedule serves every cadence.
  - In check mode, reports the plan (extents and bytes per disk) from a temporary snapshot that is removed again.
  - Long syncs can run under C(async); M(xms.warm_migration.migration_info) shows their progress.
requirements:
  - python >= 3.9
seealso:
  - module: xms.warm_migration.warm_migration_init
  - module: xms.warm_migration.migration_info
  - module: xms.warm_migration.migration_schedule
  - module: xms.warm_migration.wait_progress
  - module: xms.warm_migration.cutover
author:
  - xms.warm_migration developers (@xms)
extends_documentation_fragment:
  - xms.warm_migration.vsphere
  - xms.warm_migration.openstack
  - xms.warm_migration.source_vm
  - xms.warm_migration.data_path
options:
  force_full:
    description:
      - Copy every disk whole (allocated or not), whatever the recorded change ids say.
      - Each run with it starts over from the first byte. A forced copy that was interrupted is resumed by a run
        without it, which copies what the interrupted copy had not flushed plus what changed since.
    type: bool
    default: false
  only_when_due:
    description:
      - Sync only if the migration's cadence says a sync is due (a migration that is not seeded yet is always due).
      - Meant for a schedule that fires over a whole wave, so what would fail an operator's run is skipped with
        the reason instead - a VM whose migration has not started, one another run holds (a seed, or a sync
        from another conversion host), one in cutover.
    type: bool
    default: false
  quiesce:
    description:
      - Ask VMware Tools to quiesce the guest file systems for the snapshot; falls back to a crash-consistent snapshot.
    type: bool
    default: false
  verify:
    description:
      - After copying, read back every copied extent from both sides and compare SHA-256 digests.
    type: bool
    default: false
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: partial
    details:
      - The target (volumes, record) is not changed. On the source, the plan needs vSphere's changed areas,
        which it answers only for a snapshot - check mode takes a temporary snapshot of the source VM (named
        with the collection's prefix, without memory or quiescing) and removes it before returning.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
notes:
  - The conversion host needs nbdkit with a VDDK reader and VMware's VDDK (see O(reader) and O(vddk_libdir)),
    or, for VMs whose disks are all on NFS datastores, the NFS reader (O(reader=nfs)), which needs no VDDK.
"""

EXAMPLES = r"""
- name: Seed, or sync what changed since the last sync
  xms.warm_migration.block_sync:
    hostname: vcenter.example.com
    username: migrator@vsphere.local
    password: "{{ vcenter_password }}"
    cloud: target
    vm_name: web01
    datacenter: DC1
    bandwidth_limit: 200000000

- name: Scheduled run (e.g. every 15 minutes from AWX) that syncs only migrations that are due
  xms.warm_migration.block_sync:
    cloud: target
    vm_uuid: "{{ vm_uuid }}"
    only_when_due: true
  async: 86400
  poll: 30
"""

RETURN = r"""
kind:
  description: What the sync did - C(seed), C(incremental), C(resume), C(full_resync), or C(skipped).
  returned: always
  type: str
  sample: incremental
reason:
  description:
    - Why a sync was skipped - C(paused), C(not due ...), C(completed) once the migration is cut over, and with
      O(only_when_due) also C(not started ...), C(busy) followed by the holder, or C(in cutover).
  returned: always
  type: str
  sample: ""
bytes_copied:
  description: Bytes read from the source and written to the volumes by this sync (in check mode, planned).
  returned: always
  type: int
  sample: 73400320
duration_seconds:
  description: Wall time of the sync in seconds.
  returned: always
  type: float
  sample: 12.5
rate_bytes_per_second:
  description: Bytes copied per second over the whole sync.
  returned: always
  type: float
  sample: 5872025.6
snapshot_seconds:
  description:
    - How long the sync's snapshot lived, from asking for it to the end of its removal (0 when no sync ran).
    - vSphere writes the guest's changes to a delta file for that long and merges them back at the removal,
      so this is the sync's cost on the source; with O(parallel_disks) it is close to the largest disk's copy time.
  returned: always
  type: float
  sample: 14.2
disks:
  description: Per disk, what was planned and copied.
  returned: always
  type: list
  elements: dict
  sample: [{"disk_key": 2000, "kind": "incremental", "extents": 12, "planned_bytes": 3145728}]
migration:
  description: The migration's metrics after the sync (see M(xms.warm_migration.migration_info)).
  returned: always
  type: dict
  sample: {"phase": "ready", "sync_count": 3, "lag_seconds": 4}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.xms.warm_migration.plugins.module_utils import argument_spec as specs
from ansible_collections.xms.warm_migration.plugins.module_utils.migration import params as mparams
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.sync import run_sync
from ansible_collections.xms.warm_migration.plugins.module_utils.module_base import run


def main() -> None:
    argument_spec = {
        **specs.vsphere_argument_spec(),
        **specs.openstack_argument_spec(),
        **specs.source_vm_argument_spec(),
        **specs.data_path_argument_spec(),
        "force_full": {"type": "bool", "default": False},
        "only_when_due": {"type": "bool", "default": False},
        "quiesce": {"type": "bool", "default": False},
        "verify": {"type": "bool", "default": False},
    }
    module = AnsibleModule(
        argument_spec=argument_spec,
        required_one_of=specs.SOURCE_VM_ONE_OF + specs.PASSWORD_ONE_OF,
        mutually_exclusive=specs.SOURCE_VM_ONE_OF + specs.PASSWORD_ONE_OF,
        required_if=specs.data_path_required_if(),
        supports_check_mode=True,
    )
    name = module.params["vm_name"] or module.params["vm_uuid"] or module.params["vm_moref"]

    def body():
        settings = mparams.sync_settings(module.params)
        with mparams.module_context(module.params) as ctx:
            outcome = run_sync(ctx, settings, check_mode=module.check_mode)
        for warning in outcome.warnings:
            module.warn(warning)
        return {
            "changed": outcome.changed,
            "kind": outcome.kind,
            "reason": outcome.reason,
            "bytes_copied": outcome.bytes_copied,
            "duration_seconds": round(outcome.duration_s, 3),
            "rate_bytes_per_second": round(outcome.rate, 1),
            "snapshot_seconds": round(outcome.snapshot_s, 3),
            "disks": outcome.disks,
            "migration": outcome.state.metrics() if outcome.state else {},
        }

    run(module, f"sync the migration of VM '{name}'", body)


if __name__ == "__main__":
    main()
