#!/usr/bin/python
# Copyright: xms.warm_migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What vCenter says of a source VM, and whether it can be migrated warm."""

from __future__ import annotations

DOCUMENTATION = r"""
module: source_vm_info
short_description: Describe a source VM and give the source preflight's verdict on it
version_added: 0.1.0
description:
  - Reads, without changing anything, what vCenter says of a VM - power state, firmware, guest OS, virtual
    hardware, vCPUs and memory, disks (with their total), NICs, snapshots, CBT, a virtual TPM - and gives the
    verdict of the source preflight that M(xms.warm_migration.warm_migration_init) runs first - C(pass),
    C(warn) or C(fail), with the reasons (independent disks, physical RDMs, old virtual hardware, disks that
    need consolidation, snapshots, datastore space for the seed's snapshot, VMware Tools not running, a guest
    OS virt-v2v cannot convert).
  - Needs only vCenter - for assessing an estate before any wave or target is chosen. The target's checks
    are the preflight's (the C(preflight) playbook). Used by the C(assess) playbook.
requirements:
  - python >= 3.9
seealso:
  - module: xms.warm_migration.warm_migration_init
author:
  - xms.warm_migration developers (@xms)
extends_documentation_fragment:
  - xms.warm_migration.vsphere
  - xms.warm_migration.source_vm
attributes:
  check_mode:
    description: Changes nothing; runs in check mode as it does otherwise.
    support: full
  diff_mode:
    description: Not applicable.
    support: none
"""

EXAMPLES = r"""
- name: Assess a VM
  xms.warm_migration.source_vm_info:
    hostname: vcenter.example.com
    username: migrator@vsphere.local
    password_file: /etc/xms-warm-migration/vcenter.password
    vm_name: web01
  register: assessment

- name: Say what keeps it from moving
  ansible.builtin.debug:
    msg: "{{ assessment.verdict.reasons }}"
  when: assessment.verdict.status != 'pass'
"""

RETURN = r"""
vm:
  description: The VM as vCenter describes it. Sizes in bytes, memory in MiB.
  returned: always
  type: dict
  sample:
    name: web01
    moref: vm-42
    instance_uuid: 5032c8a5-9c5b-0c4f-8f6e-2b9e8a1f4c11
    power_state: poweredOn
    firmware: efi
    guest_id: rhel9_64Guest
    guest_full_name: Red Hat Enterprise Linux 9 (64-bit)
    hw_version: 19
    vcpus: 2
    memory_mb: 4096
    tools_running: true
    cbt_enabled: false
    vtpm: false
    snapshot_count: 1
    oldest_snapshot: "2026-10-01T08:00:00+00:00"
    disks: [{key: 2000, label: Hard disk 1, capacity_bytes: 42949672960, datastore: ds01, bus: scsi, thin: true,
             disk_mode: persistent, rdm_mode: null}]
    disks_total_bytes: 42949672960
    nics: [{mac: "00:50:56:aa:bb:01", network: VM Network, adapter: vmxnet3, addresses: [10.0.0.15/24]}]
verdict:
  description:
    - The source preflight's verdict - C(pass), C(warn) (worth reading first) or C(fail) (blocks a warm
      migration), with the reasons.
  returned: always
  type: dict
  sample: {status: warn, reasons: ["the VM has 1 snapshot(s), the oldest taken 2026-10-01 (65 day(s) ago): ..."]}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.xms.warm_migration.plugins.module_utils import argument_spec as specs
from ansible_collections.xms.warm_migration.plugins.module_utils.migration import params as mparams
from ansible_collections.xms.warm_migration.plugins.module_utils.module_base import run
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere.assessment import assess


def main() -> None:
    module = AnsibleModule(
        argument_spec={**specs.vsphere_argument_spec(), **specs.source_vm_argument_spec()},
        required_one_of=specs.SOURCE_VM_ONE_OF + specs.PASSWORD_ONE_OF,
        mutually_exclusive=specs.SOURCE_VM_ONE_OF + specs.PASSWORD_ONE_OF,
        supports_check_mode=True,
    )

    def body():
        with mparams.connect_vsphere(module.params) as vsphere:
            vm = mparams.find_source_vm(vsphere, module.params)
            return {"changed": False, **assess(vsphere, vm)}

    run(module, "assess the source VM", body)


if __name__ == "__main__":
    main()
