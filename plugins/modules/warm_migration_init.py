#!/usr/bin/python
# Copyright: xms.warm_migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Start the warm migration of a VM: preflight, CBT, one volume per disk, the migration record."""

from __future__ import annotations

DOCUMENTATION = r"""
module: warm_migration_init
short_description: Start the warm migration of a vSphere VM into OpenStack
version_added: 0.1.0
description:
  - Checks both sides first - the source VM (hardware version, no physical RDM or independent disks,
    snapshots with their age, disks that need consolidation, datastore space for the seed snapshot's delta,
    VMware Tools), the VDDK release in O(vddk_libdir) against the releases of vCenter and of the VM's ESXi
    host (a VDDK release serves its own vSphere release and the two before it), and the target (volume
    types, availability zones, quota for the volumes, flavor, mapped networks, source MACs free on their
    target networks). Nothing is created unless
    every check passes; the checks are returned either way.
  - Enables Changed Block Tracking on the VM (and activates it), then creates one Cinder volume per
    source disk, rounded up to whole GiB, with the chosen volume type and availability zone, carrying
    the migration record in its metadata. The volumes take their quota at once.
  - The volumes stay protected replicas (not bootable) until cutover.
  - Idempotent - a rerun finds the migration's volumes by their record (never by name) and creates only
    what is missing.
  - A rerun is also how a running migration follows its VM's disks - a disk added to the VM gets its
    volume (the next M(xms.warm_migration.block_sync) seeds it while the others sync incrementally, and
    it boots after the disks the migration already had); the volume of a removed disk leaves the
    migration as O(removed_disks) says.
  - With O(state=absent), abandons the migration instead - deletes its volumes (with the snapshots taken of
    them) and so its record, after checking that no run holds it, that it is not in cutover (roll that back
    first), that no test migration of it exists and, for a completed migration, that O(keep_volumes) is set.
    Check mode lists what would go. CBT stays on at the source.
requirements:
  - python >= 3.9
seealso:
  - module: xms.warm_migration.block_sync
  - module: xms.warm_migration.migration_schedule
  - module: xms.warm_migration.migration_info
author:
  - xms.warm_migration developers (@xms)
extends_documentation_fragment:
  - xms.warm_migration.vsphere
  - xms.warm_migration.openstack
  - xms.warm_migration.source_vm
  - xms.warm_migration.target
options:
  state:
    description:
      - V(present) starts (or follows) the migration; V(absent) abandons it.
    type: str
    choices: [present, absent]
    default: present
  keep_volumes:
    description:
      - With O(state=absent), take the migration's record off its volumes and leave them in the project instead of
        deleting them. The only way to abandon a completed migration, whose volumes are its instance's disks.
    type: bool
    default: false
  cadence:
    description:
      - How often incremental syncs are due (see O(xms.warm_migration.block_sync#module:only_when_due)).
    type: str
    choices: [manual, 15m, hourly, daily]
    default: manual
  vddk_libdir:
    description:
      - Where VMware's VDDK is unpacked on the host that runs this module (the conversion host that will
        seed the VM), as for M(xms.warm_migration.block_sync). Its release is checked against vCenter's and
        the ESXi host's before anything changes.
    type: path
    default: /opt/vmware-vix-disklib-distrib
  reader:
    description:
      - What will read the source disks on this host, as for M(xms.warm_migration.block_sync). With the NFS reader
        (C(nfs), or C(auto) with no VDDK in O(vddk_libdir) and every disk on an NFS datastore) there is no VDDK to
        check; instead each disk's file must be reachable on its datastore, mounted read-only on this host.
    type: str
    choices: [auto, nbdkit-vddk, xms, nfs]
    default: auto
    aliases: [vddk_reader]
  nfs_mounts:
    description:
      - Where NFS datastores are mounted on this host, by datastore name, as for M(xms.warm_migration.block_sync).
    type: dict
    default: {}
  state_dir:
    description:
      - The data path's directory on this host, as for M(xms.warm_migration.block_sync). A datastore that is not
        mounted yet is mounted read-only under it for the NFS reader.
    type: path
    default: /var/lib/xms-warm-migration
  removed_disks:
    description:
      - What becomes of the volume of a disk that was removed from the VM after the migration started.
      - V(fail) refuses and names the disks (nothing changes); V(keep) takes the volume out of the migration
        (its record goes) and leaves it in the project; V(delete) deletes it.
    type: str
    choices: [fail, keep, delete]
    default: fail
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: full
    details: CBT on the source, and the source disks that have a volume, before and after.
"""

EXAMPLES = r"""
- name: Start migrating web01 into the target project
  xms.warm_migration.warm_migration_init:
    hostname: vcenter.example.com
    username: migrator@vsphere.local
    password: "{{ vcenter_password }}"
    cloud: target
    vm_name: web01
    datacenter: DC1
    volume_type: standard-ssd
    vddk_libdir: /opt/vmware-vix-disklib-distrib
    disk_volume_types:
      Hard disk 2: archive-hdd
    availability_zone: az1
    network_map:
      - source: VM Network
        network: prod-net
    cadence: hourly

- name: Drop web01 from the wave - delete its volumes and record (check mode lists them first)
  xms.warm_migration.warm_migration_init:
    cloud: target
    vm_name: web01
    state: absent
"""

RETURN = r"""
migration_id:
  description: The id of the migration (derived from the VM's instance UUID).
  returned: always
  type: str
  sample: vm-5032c8a5-9c5b-0c4f-8f6e-2b9e8a1f4c11
checks:
  description: Every preflight check with its verdict.
  returned: always
  type: list
  elements: dict
  sample: [{"name": "vddk", "ok": true, "message": "VDDK 8.0.3 serves vCenter 8.0.3 and ESXi 8.0.2 (host 'esx07')"},
           {"name": "volume_type", "ok": true, "message": "volume type standard-ssd exists"}]
volumes:
  description:
    - One entry per source disk - disk key, size, volume type, zone, and whether it existed before.
    - One entry per volume whose disk left the VM, with what was done with it (O(removed_disks)).
  returned: always
  type: list
  elements: dict
  sample: [{"disk_key": "2000", "size_bytes": 1073741824, "volume_type": "standard-ssd", "exists": false},
           {"disk_key": "2001", "volume_id": "5f3c...", "exists": true, "removed_from_source": "keep"}]
cbt_enabled:
  description: Whether this run enabled CBT on the VM (false when it was on already).
  returned: always
  type: bool
  sample: true
deleted_volumes:
  description: With O(state=absent), the volumes deleted (in check mode, that would be).
  returned: when O(state=absent)
  type: list
  elements: str
deleted_snapshots:
  description: With O(state=absent), the snapshots of those volumes, deleted with them.
  returned: when O(state=absent)
  type: list
  elements: str
released_volumes:
  description: With O(state=absent) and O(keep_volumes), the volumes kept without the migration's record.
  returned: when O(state=absent)
  type: list
  elements: str
migration:
  description: The migration's metrics (see M(xms.warm_migration.migration_info)); empty in check mode.
  returned: always
  type: dict
  sample: {"phase": "initializing", "sync_count": 0}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.xms.warm_migration.plugins.module_utils import argument_spec as specs
from ansible_collections.xms.warm_migration.plugins.module_utils.migration import params as mparams
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.abandon import abandon
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.initialize import RemovedDisks, initialize
from ansible_collections.xms.warm_migration.plugins.module_utils.module_base import run
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere.datapath import Reader


def main() -> None:
    argument_spec = {
        **specs.vsphere_argument_spec(),
        **specs.openstack_argument_spec(),
        **specs.source_vm_argument_spec(),
        **specs.target_argument_spec(),
        "cadence": {"type": "str", "default": "manual", "choices": ["manual", "15m", "hourly", "daily"]},
        "vddk_libdir": specs.vddk_libdir_spec(),
        **specs.reader_argument_spec(),
        "removed_disks": {"type": "str", "default": "fail", "choices": [r.value for r in RemovedDisks]},
        "state": {"type": "str", "default": "present", "choices": ["present", "absent"]},
        "keep_volumes": {"type": "bool", "default": False},
    }
    module = AnsibleModule(
        argument_spec=argument_spec,
        required_one_of=specs.SOURCE_VM_ONE_OF + specs.PASSWORD_ONE_OF,
        mutually_exclusive=specs.SOURCE_VM_ONE_OF + specs.PASSWORD_ONE_OF,
        supports_check_mode=True,
    )
    name = module.params["vm_name"] or module.params["vm_uuid"] or module.params["vm_moref"]

    def abandon_body():
        with mparams.module_context(module.params) as ctx:
            outcome = abandon(ctx, keep_volumes=module.params["keep_volumes"], check_mode=module.check_mode)
            migration_id = ctx.migration_id
        return {
            "changed": outcome.changed,
            "migration_id": migration_id,
            "deleted_volumes": outcome.deleted_volumes,
            "deleted_snapshots": outcome.deleted_snapshots,
            "released_volumes": outcome.released_volumes,
        }

    def body():
        target = mparams.target_settings(module.params)
        with mparams.module_context(module.params) as ctx:
            outcome = initialize(ctx, target, vddk_libdir=module.params["vddk_libdir"], check_mode=module.check_mode,
                                 reader=Reader(module.params["reader"]), nfs_mounts=module.params["nfs_mounts"],
                                 state_dir=module.params["state_dir"],
                                 removed_disks=RemovedDisks(module.params["removed_disks"]))  # fmt: skip
        for warning in outcome.warnings:
            module.warn(warning)
        result = {
            "changed": outcome.changed,
            "migration_id": outcome.migration_id,
            "checks": outcome.checks,
            "volumes": outcome.volumes_planned,
            "cbt_enabled": outcome.cbt_enabled_now,
            "migration": outcome.state.metrics() if outcome.state else {},
        }
        if module._diff and outcome.changed:
            planned = outcome.volumes_planned
            result["diff"] = {
                "before": {"cbt": "off" if outcome.cbt_enabled_now else "on",
                           "volumes": sorted(v["disk_key"] for v in planned if v["exists"])},
                "after": {"cbt": "on",
                          "volumes": sorted(v["disk_key"] for v in planned if "removed_from_source" not in v)},
            }  # fmt: skip
        return result

    if module.params["state"] == "absent":
        run(module, f"abandon the migration of VM '{name}'", abandon_body)
    else:
        run(module, f"initialize the migration of VM '{name}'", body)


if __name__ == "__main__":
    main()
