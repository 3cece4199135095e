#!/usr/bin/python
# Copyright: xms.warm_migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Boot a clone of a migration's replica as a test, while its syncs go on; or remove the test."""

from __future__ import annotations

DOCUMENTATION = r"""
module: migration_test
short_description: Test a migration - boot a converted clone of its replica, the replica untouched
version_added: 0.1.0
description:
  - The replica is never booted (it stays protected until the cutover). A test migration clones every
    replica volume through Cinder at a consistent point - while this host holds the migration's lock and
    no sync of it runs anywhere - then releases the lock, so syncs go on while the test runs.
  - The clones go through the cutover's conversion (O(conversion)) and, with O(boot_check), the boot check;
    then a server boots from them on O(test_network), one port per source NIC with a MAC Neutron picks
    (never the source's, which is live), and the module waits until it is C(ACTIVE).
  - The record keeps the last test (when its clones were taken, the result, the server, seconds per step;
    see M(xms.warm_migration.migration_info)); its conversion and instance times become this conversion
    host's measured times, which the cutover's downtime projection uses.
  - Everything the test creates carries the migration id (server and clones as metadata C(xms_test_of),
    ports by name), and O(state=absent) deletes it all. A rerun while a passed test's server runs changes
    nothing; the leftovers of a failed test are removed before a new one.
  - Before creating anything it checks the test network (and subnet), flavor, availability zone, key pair,
    security groups, volume quota for the clones, compute and port quota, and the conversion options,
    and refuses naming the parameter.
  - Clones have their replica's volume type (Cinder clones within a type).
requirements:
  - python >= 3.9
seealso:
  - module: xms.warm_migration.cutover
  - module: xms.warm_migration.block_sync
author:
  - xms.warm_migration developers (@xms)
extends_documentation_fragment:
  - xms.warm_migration.vsphere
  - xms.warm_migration.openstack
  - xms.warm_migration.source_vm
  - xms.warm_migration.data_path
  - xms.warm_migration.conversion
options:
  state:
    description:
      - C(present) runs a test (unless a passed one's server runs); C(absent) removes its server, ports and clones.
    type: str
    choices: [present, absent]
    default: present
  test_network:
    description:
      - The network the test server's ports go on, for O(state=present). Use an isolated network when the
        guest would reach production services.
    type: str
  test_subnet:
    description:
      - A subnet of O(test_network) for the ports' addresses.
    type: str
  instance_name:
    description:
      - The test server's name; default is the VM's name followed by C(-test).
    type: str
  flavor:
    description:
      - Flavor of the test server; the best match for the VM's vCPU/RAM when unset.
    type: str
  availability_zone:
    description:
      - Compute availability zone of the test server.
    type: str
  key_name:
    description:
      - The Nova key pair of the test server.
    type: str
  security_groups:
    description:
      - Security groups of the test server's ports.
    type: list
    elements: str
    default: []
  boot_check:
    description:
      - Boot the converted clones under QEMU on the conversion host first, as the cutover's
        O(xms.warm_migration.cutover#module:boot_check) does, with the test ports' MACs (to which the
        conversion pins the guest's interface names).
    type: bool
    default: false
  instance_timeout:
    description:
      - Seconds to wait for the test server to become C(ACTIVE), or to be deleted.
    type: int
    default: 600
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: Runs every check and reports the actions it would take (or, for O(state=absent), what it would delete).
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
"""

EXAMPLES = r"""
- name: Boot a test of web01 on the isolated test network
  xms.warm_migration.migration_test:
    cloud: target
    vm_name: web01
    test_network: migration-test
    boot_check: true

- name: Remove the test
  xms.warm_migration.migration_test:
    cloud: target
    vm_name: web01
    state: absent
"""

RETURN = r"""
actions:
  description:
    - What the test did (in check mode, would do) - C(remove_earlier_test), C(clone), C(convert)
      (or C(no_conversion)), C(boot_check), C(instance).
  returned: always
  type: list
  elements: str
  sample: ["clone", "convert", "instance"]
instance:
  description: The test server - id, name, status, ports.
  returned: when it was created, or a passed test's server runs
  type: dict
  sample: {"id": "5d1c...", "status": "ACTIVE"}
conversion:
  description: The conversion's result.
  returned: when the conversion ran
  type: dict
  sample: {"converted": true, "duration_seconds": 151.0}
boot:
  description: The boot check's result - per MAC, what the guest sent from it.
  returned: when O(boot_check) ran
  type: dict
  sample: {"passed": true, "nics": {"fa:16:3e:5c:01:9a": ["DHCP discover"]}, "required": ["fa:16:3e:5c:01:9a"]}
timings:
  description: Seconds per step - C(cloned), C(converted), C(boot_checked), C(instance).
  returned: always
  type: dict
  sample: {"cloned": 12, "converted": 151, "instance": 9}
removed:
  description: What was deleted (C(server:<id>), C(port:<id>), C(volume:<id>)); in check mode, what would be.
  returned: always
  type: list
  elements: str
  sample: ["server:5d1c...", "volume:0e2f..."]
migration:
  description: The migration's metrics, its last test included (see M(xms.warm_migration.migration_info)).
  returned: always
  type: dict
  sample: {"phase": "ready", "test": {"result": "passed", "at": "2026-11-24T04:00:00Z"}}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.xms.warm_migration.plugins.module_utils import argument_spec as specs
from ansible_collections.xms.warm_migration.plugins.module_utils.migration import params as mparams
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.rehearsal import (
    MigrationTestSettings,
    remove_test,
    run_test,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.module_base import run


def main() -> None:
    argument_spec = {
        **specs.vsphere_argument_spec(),
        **specs.openstack_argument_spec(),
        **specs.source_vm_argument_spec(),
        **specs.data_path_argument_spec(),
        **specs.conversion_argument_spec(),
        "state": {"type": "str", "default": "present", "choices": ["present", "absent"]},
        "test_network": {"type": "str"},
        "test_subnet": {"type": "str"},
        "instance_name": {"type": "str"},
        "flavor": {"type": "str"},
        "availability_zone": {"type": "str"},
        "key_name": {"type": "str", "no_log": False},
        "security_groups": {"type": "list", "elements": "str", "default": []},
        "boot_check": {"type": "bool", "default": False},
        "instance_timeout": {"type": "int", "default": 600},
    }
    module = AnsibleModule(
        argument_spec=argument_spec,
        required_one_of=specs.SOURCE_VM_ONE_OF + specs.PASSWORD_ONE_OF,
        mutually_exclusive=specs.SOURCE_VM_ONE_OF + specs.PASSWORD_ONE_OF,
        required_if=[*specs.data_path_required_if(), ["state", "present", ["test_network"]]],
        supports_check_mode=True,
    )
    p = module.params
    name = p["vm_name"] or p["vm_uuid"] or p["vm_moref"]
    settings = MigrationTestSettings(
        sync=mparams.sync_settings(p),
        network=p["test_network"],
        subnet=p["test_subnet"],
        instance_name=p["instance_name"],
        flavor=p["flavor"],
        availability_zone=p["availability_zone"],
        key_name=p["key_name"],
        security_groups=p["security_groups"],
        conversion=mparams.conversion_options(p),
        boot_check=p["boot_check"],
        instance_timeout=p["instance_timeout"],
    )

    def body():
        with mparams.module_context(p) as ctx:
            if p["state"] == "absent":
                outcome = remove_test(ctx, timeout=settings.instance_timeout, check_mode=module.check_mode)
            else:
                outcome = run_test(ctx, settings, check_mode=module.check_mode)
        result = {
            "changed": outcome.changed,
            "actions": outcome.actions,
            "timings": outcome.timings,
            "removed": outcome.removed,
            "migration": outcome.state.metrics(),
        }
        for key in ("instance", "conversion", "boot"):
            if getattr(outcome, key) is not None:
                result[key] = getattr(outcome, key)
        return result

    run(module, f"test the migration of VM '{name}'", body)


if __name__ == "__main__":
    main()
