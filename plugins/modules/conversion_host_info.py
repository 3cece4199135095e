#!/usr/bin/python
# Copyright: xms.warm_migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Whether the host that runs it can serve as a conversion host."""

from __future__ import annotations

DOCUMENTATION = r"""
module: conversion_host_info
short_description: Check that a host can serve as a conversion host
version_added: 0.1.0
description:
  - Checks, without changing anything, what the seed, the syncs and the cutover need on the host that runs
    the module - libnbd's Python binding, nbdkit with its Python plugin (the collection's VDDK reader runs in
    it), VDDK in O(vddk_libdir), a private O(state_dir), and for the protocols in O(protocols) the client
    os-brick runs (with O(attach_mode=brick)).
  - With O(convert) also the conversion - C(virt-v2v-in-place) and QEMU (on PATH, or under C(/usr/libexec) as
    RHEL installs them), an accelerator that works (KVM, or TCG where KVM does not; RHEL's C(qemu-kvm) has no
    TCG), and with O(libguestfs_test) a run of C(libguestfs-test-tool) that builds and boots libguestfs's
    appliance in the environment the conversion uses (minutes under TCG).
  - Reports every check with its verdict; it does not fail when one fails (C(ready) says it), so a role can
    list them all. Used by the C(conversion_host) role.
requirements:
  - python >= 3.9
  - the packages bindep.txt lists for a conversion host
seealso:
  - module: xms.warm_migration.block_sync
  - module: xms.warm_migration.cutover
author:
  - xms.warm_migration developers (@xms)
extends_documentation_fragment:
  - xms.warm_migration.data_path
options:
  protocols:
    description:
      - The storage protocols the cloud's Cinder back-ends hand out, whose clients the host needs with
        O(attach_mode=brick).
    type: list
    elements: str
    choices: [iscsi, rbd, nfs, fibre_channel, nvmeof]
    default: []
  convert:
    description:
      - Whether the host converts guests at cutover (and for test migrations).
    type: bool
    default: true
  libguestfs_test:
    description:
      - With O(convert), build and boot libguestfs's appliance once.
    type: bool
    default: true
attributes:
  check_mode:
    description: Changes nothing; runs in check mode as it does otherwise.
    support: full
  diff_mode:
    description: Not applicable.
    support: none
"""

EXAMPLES = r"""
- name: Check the conversion host
  xms.warm_migration.conversion_host_info:
    state_dir: /var/lib/xms-warm-migration
    vddk_libdir: /opt/vmware-vix-disklib-distrib
    protocols: [iscsi]
  register: host

- name: Say what is missing
  ansible.builtin.assert:
    that: host.ready
    fail_msg: "{{ host.checks | rejectattr('ok') | map(attribute='message') | list }}"
"""

RETURN = r"""
ready:
  description: Whether every check passed.
  returned: always
  type: bool
  sample: true
checks:
  description: Every check with its verdict and what it found (or what is missing and what brings it).
  returned: always
  type: list
  elements: dict
  sample: [{"name": "qemu", "ok": true, "message": "/usr/bin/qemu-system-x86_64 with TCG"}]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.xms.warm_migration.plugins.module_utils import argument_spec as specs
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.host import as_dicts, host_checks
from ansible_collections.xms.warm_migration.plugins.module_utils.module_base import run


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            **specs.data_path_argument_spec(),
            "protocols": {
                "type": "list",
                "elements": "str",
                "default": [],
                "choices": ["iscsi", "rbd", "nfs", "fibre_channel", "nvmeof"],
            },
            "convert": {"type": "bool", "default": True},
            "libguestfs_test": {"type": "bool", "default": True},
        },
        required_if=specs.data_path_required_if(),
        supports_check_mode=True,
    )
    p = module.params

    def body():
        checks = host_checks(
            state_dir=p["state_dir"],
            vddk_libdir=p["vddk_libdir"],
            protocols=p["protocols"] if p["attach_mode"] == "brick" else [],
            convert=p["convert"],
            libguestfs_test=p["libguestfs_test"],
        )
        return {"changed": False, "ready": all(c.ok for c in checks), "checks": as_dicts(checks)}

    run(module, "check the conversion host", body)


if __name__ == "__main__":
    main()
