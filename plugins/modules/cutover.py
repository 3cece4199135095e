#!/usr/bin/python
# Copyright: xms.warm_migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Switch a seeded warm migration over to its OpenStack instance."""

from __future__ import annotations

DOCUMENTATION = r"""
module: cutover
short_description: Switch a warm migration over - shut the source down, copy the last delta, boot the instance
version_added: 0.1.0
description:
  - Shuts the guest down first (VMware Tools), powering it off after O(shutdown_timeout) when
    O(power_off_fallback) allows, so no write made after the final snapshot is lost.
  - Copies the final delta from a snapshot of the powered-off VM.
  - Converts the guest for KVM in place on the volumes (virt-v2v-in-place), unless O(conversion.skip).
  - Marks the volumes bootable, creates ports with the source MAC addresses (and fixed IPs where asked),
    boots the instance from the volumes in disk order with the flavor and zone, and waits for C(ACTIVE).
  - Marks the source VM as migrated.
  - Each step is recorded when done; a rerun after a failure resumes after the last finished step and
    copies no data that is already on the volumes. A completed migration reports C(changed=false).
  - With O(state=rolled_back), undoes a cutover that has not created the instance yet - powers the
    source back on and returns the migration to C(ready) (a converted migration is then fully resynced).
requirements:
  - python >= 3.9
seealso:
  - module: xms.warm_migration.block_sync
  - module: xms.warm_migration.migration_test
  - module: xms.warm_migration.migration_info
  - module: xms.warm_migration.wait_progress
author:
  - xms.warm_migration developers (@xms)
extends_documentation_fragment:
  - xms.warm_migration.vsphere
  - xms.warm_migration.openstack
  - xms.warm_migration.source_vm
  - xms.warm_migration.data_path
  - xms.warm_migration.conversion
  - xms.warm_migration.target
options:
  state:
    description:
      - C(completed) runs or resumes the cutover; C(rolled_back) undoes an unfinished one.
    type: str
    choices: [completed, rolled_back]
    default: completed
  shutdown_timeout:
    description:
      - Seconds to wait for the guest to shut down cleanly.
    type: int
    default: 300
  power_off_fallback:
    description:
      - Power the VM off when the guest has not shut down after O(shutdown_timeout). Without it that is an error.
    type: bool
    default: true
  boot_check:
    description:
      - Before creating the instance, boot the converted volumes under QEMU on the conversion host as the
        instance will have them (the VM's firmware, OVMF with an empty variable store for C(efi); a virtio NIC
        per mapped MAC) and require traffic from the guest (DHCP, ARP, IPv6 solicitations) on each NIC its
        network configuration names, and on at least one NIC. Nothing inside the guest is needed; a serial
        console, where the guest has one, makes a stuck boot fail early.
    type: bool
    default: false
  instance_timeout:
    description:
      - Seconds to wait for the instance to become C(ACTIVE).
    type: int
    default: 600
  validation:
    description:
      - What proves, once the instance is C(ACTIVE), that its guest runs. The migration is C(completed) only
        when it passed (or is off).
      - The conversion host probes each fixed IP of the instance (ICMP, and the TCP ports named), and reads
        Nova's console log, reported where the guest writes one but never required. Without a fixed IP to
        probe, the console decides.
      - A guest that shows nothing within O(validation.timeout) leaves its instance stopped, the source off and
        the migration in cutover. Run the cutover again to start the instance and validate again, with
        O(validation.enabled=false) to keep the instance as it is, or roll back (O(state=rolled_back)).
    type: dict
    default: {}
    suboptions:
      enabled:
        description: Validate; V(false) completes the migration on C(ACTIVE) alone.
        type: bool
        default: true
      timeout:
        description: Seconds to wait for every probe to answer once.
        type: int
        default: 900
      ping:
        description: Require each fixed IP to answer ICMP echo.
        type: bool
        default: true
      tcp_ports:
        description: TCP ports each fixed IP must accept connections on (for example V(22) or V(443)).
        type: list
        elements: int
        default: []
  post_migration_snapshot:
    description:
      - Once the cutover is validated, take one Cinder snapshot of each volume (tagged
        C(xms_post_migration_of) with the migration id), a rollback point in the cloud for the workload's owner.
      - The volumes are in use by the instance; Cinder back-ends that snapshot attached volumes through Nova
        (NFS) ask it to. A failure leaves the migration in cutover before C(completed); a rerun resumes there.
    type: bool
    default: false
  key_name:
    description:
      - The Nova key pair of the instance.
    type: str
  security_groups:
    description:
      - Security groups of the instance's ports.
    type: list
    elements: str
    default: []
  downtime_budget:
    description:
      - Seconds the source may be down (final delta, conversion, instance step), as projected from the
        migration's syncs and the conversion host's measured step times.
      - While the source still runs, the cutover syncs back to back until the projection fits, then shuts
        down. When it cannot (the final delta stops shrinking, or after five syncs), it fails naming this
        parameter, with the source running and nothing shut down.
      - Unset, the cutover shuts down at once; the projection is returned either way.
    type: int
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: full
    details: The migration's phase, cutover step and instance, before and after.
"""

EXAMPLES = r"""
- name: Cut web01 over
  xms.warm_migration.cutover:
    hostname: vcenter.example.com
    username: migrator@vsphere.local
    password: "{{ vcenter_password }}"
    cloud: target
    vm_name: web01
    flavor: m1.medium
    availability_zone: az1
    network_map:
      - source: VM Network
        network: prod-net
    shutdown_timeout: 600
"""

RETURN = r"""
steps_done:
  description:
    - The cutover steps this run did (in check mode, the steps still to do).
    - For O(state=rolled_back), what the rollback did (would do) - C(power_on_source), C(phase_ready), and
      C(full_resync_next) when the volumes were converted.
  returned: always
  type: list
  elements: str
  sample: [shutdown, final_sync, converted, instance, completed]
shutdown:
  description: How the source went down - C(shutdown), C(powered_off) (fallback) or C(already_off).
  returned: when the shutdown step ran
  type: str
  sample: shutdown
final_sync:
  description: The final delta - kind, bytes, duration.
  returned: when the final sync ran
  type: dict
  sample: {"kind": "incremental", "bytes": 1048576, "duration_seconds": 2.1}
conversion:
  description: The guest conversion's result.
  returned: when the conversion ran
  type: dict
  sample: {"converted": true, "duration_seconds": 160.2}
boot:
  description:
    - The boot check of the converted volumes under QEMU - per MAC, what the guest sent from it; the MACs that
      had to be heard (those the guest's configuration names); the firmware and accelerator used.
  returned: when O(boot_check) ran
  type: dict
  sample: {"passed": true, "nics": {"00:50:56:01:00:07": ["DHCP discover", "IPv6 router solicitation from fe80::1"]},
           "required": ["00:50:56:01:00:07"], "firmware": "bios", "duration_seconds": 41.3, "accelerator": "tcg"}
instance:
  description: The instance created - id, name, status, ports.
  returned: when the instance step ran
  type: dict
  sample: {"id": "9b0e...", "status": "ACTIVE"}
validation:
  description:
    - The evidence that the instance's guest runs - each probe, whether it answered and after how many
      seconds, and the console log's verdict. Only C(enabled=false) when O(validation.enabled) is off.
  returned: when the validation step ran
  type: dict
  sample:
    passed: true
    took_seconds: 48.0
    evidence:
      - {check: ping, target: 10.0.4.17, ok: true, after_seconds: 45.0, detail: answered}
      - {check: console, target: console log, ok: true, after_seconds: 10.0, detail: "shows 'lab-guest login: '"}
post_migration_snapshots:
  description: The ids of the post-migration snapshots, one per volume in disk order.
  returned: when O(post_migration_snapshot) is on and the cutover completed
  type: list
  elements: str
  sample: ["3f1c...", "8a0e..."]
projection:
  description:
    - The projected downtime the cutover went by (in check mode, would go by) - change and copy rates,
      final delta, conversion and instance times, and their sum C(downtime_seconds). Null before an incremental sync.
  returned: always
  type: dict
  sample: {"downtime_seconds": 95.2, "final_sync_seconds": 12.1, "conversion_seconds": 60.0, "instance_seconds": 23.0,
           "change_rate_bytes_per_second": 104857.6}
convergence_syncs:
  description: Syncs run back to back to fit O(downtime_budget).
  returned: always
  type: int
  sample: 2
downtime_seconds:
  description:
    - Seconds from the guest going down to its instance answering (validated; ACTIVE with validation off),
      measured (for a source found already off, from the moment the cutover saw it off). Null until the
      guest is down.
  returned: always
  type: int
  sample: 312
timings:
  description: Seconds each step took, from the end of the step before it (C(shutdown) from the start).
  returned: always
  type: dict
  sample: {"shutdown": 21, "final_sync": 14, "converted": 240, "boot_checked": 38, "instance": 19, "completed": 1}
migration:
  description: The migration's metrics after the run (see M(xms.warm_migration.migration_info)).
  returned: always
  type: dict
  sample: {"phase": "completed", "instance_id": "9b0e..."}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.xms.warm_migration.plugins.module_utils import argument_spec as specs
from ansible_collections.xms.warm_migration.plugins.module_utils.migration import params as mparams
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.cutover import (
    CutoverSettings,
    check_settings,
    rollback,
    run_cutover,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.validation import ValidationSettings
from ansible_collections.xms.warm_migration.plugins.module_utils.module_base import run


def main() -> None:
    argument_spec = {
        **specs.vsphere_argument_spec(),
        **specs.openstack_argument_spec(),
        **specs.source_vm_argument_spec(),
        **specs.data_path_argument_spec(),
        **specs.target_argument_spec(),
        "state": {"type": "str", "default": "completed", "choices": ["completed", "rolled_back"]},
        "shutdown_timeout": {"type": "int", "default": 300},
        "power_off_fallback": {"type": "bool", "default": True},
        **specs.conversion_argument_spec(),
        "boot_check": {"type": "bool", "default": False},
        "instance_timeout": {"type": "int", "default": 600},
        "validation": {
            "type": "dict",
            "default": {},
            "options": {
                "enabled": {"type": "bool", "default": True},
                "timeout": {"type": "int", "default": 900},
                "ping": {"type": "bool", "default": True},
                "tcp_ports": {"type": "list", "elements": "int", "default": []},
            },
        },
        "post_migration_snapshot": {"type": "bool", "default": False},
        "key_name": {"type": "str", "no_log": False},
        "downtime_budget": {"type": "int"},
        "security_groups": {"type": "list", "elements": "str", "default": []},
    }
    module = AnsibleModule(
        argument_spec=argument_spec,
        required_one_of=specs.SOURCE_VM_ONE_OF + specs.PASSWORD_ONE_OF,
        mutually_exclusive=specs.SOURCE_VM_ONE_OF + specs.PASSWORD_ONE_OF,
        required_if=specs.data_path_required_if(),
        supports_check_mode=True,
    )
    p = module.params
    name = p["vm_name"] or p["vm_uuid"] or p["vm_moref"]
    settings = CutoverSettings(
        sync=mparams.sync_settings(p),
        shutdown_timeout=p["shutdown_timeout"],
        power_off_fallback=p["power_off_fallback"],
        conversion=mparams.conversion_options(p),
        boot_check=p["boot_check"],
        instance_timeout=p["instance_timeout"],
        validation=ValidationSettings(
            enabled=p["validation"]["enabled"],
            timeout_s=p["validation"]["timeout"],
            ping=p["validation"]["ping"],
            tcp_ports=tuple(p["validation"]["tcp_ports"]),
        ),
        post_migration_snapshot=p["post_migration_snapshot"],
        key_name=p["key_name"],
        downtime_budget=p["downtime_budget"],
        security_groups=p["security_groups"],
    )

    def body():
        check_settings(settings)
        target = mparams.target_settings(p)
        with mparams.module_context(p) as ctx:
            if p["state"] == "rolled_back":
                outcome = rollback(ctx, settings, check_mode=module.check_mode)
            else:
                outcome = run_cutover(ctx, target, settings, check_mode=module.check_mode)
        for warning in outcome.warnings:
            module.warn(warning)
        result = {
            "changed": outcome.changed,
            "steps_done": outcome.steps_done,
            "projection": outcome.projection,
            "convergence_syncs": outcome.convergence_syncs,
            "downtime_seconds": outcome.downtime_s,
            "timings": outcome.timings or {},
            "migration": outcome.state.metrics(),
        }
        for key in (
            "shutdown",
            "final_sync",
            "conversion",
            "boot",
            "instance",
            "validation",
            "post_migration_snapshots",
        ):
            if getattr(outcome, key) is not None:
                result[key] = getattr(outcome, key)
        if module._diff and outcome.changed:
            result["diff"] = {"before": outcome.before, "after": outcome.after}
        return result

    run(module, f"cut over the migration of VM '{name}'", body)


if __name__ == "__main__":
    main()
