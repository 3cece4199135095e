#!/usr/bin/python
# Copyright: xms.warm_migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Write an estate's assessment: a CSV file and an HTML page."""

from __future__ import annotations

DOCUMENTATION = r"""
module: assessment_report
short_description: Write the assessment of source VMs as a CSV file and an HTML page
version_added: 0.1.0
description:
  - Writes what M(xms.warm_migration.source_vm_info) found of each VM - the verdict (Pass, Warn or Fail, with
    the reasons), power state, firmware, guest OS, vCPUs, memory, disks and their total, NICs, snapshots, CBT,
    VMware Tools, a virtual TPM - as one CSV row per VM and as one self-contained HTML page (no script, no
    external asset), the worst verdicts first.
  - A VM that could not be read is written too, with verdict Fail and the reason.
  - Both files are replaced atomically. Used by the C(assess) playbook.
requirements:
  - python >= 3.9
seealso:
  - module: xms.warm_migration.source_vm_info
  - module: xms.warm_migration.wave_report
author:
  - xms.warm_migration developers (@xms)
options:
  path:
    description: Where to write the HTML page. Its directory must exist.
    type: path
    required: true
  csv_path:
    description: Where to write the CSV file. Its directory must exist. Not written when unset.
    type: path
  title:
    description: The page's heading.
    type: str
    default: Warm migration assessment
  vms:
    description: The VMs assessed.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: The VM's inventory name.
        type: str
        required: true
      verdict:
        description: The verdict.
        type: str
        choices: [pass, warn, fail]
        required: true
      reasons:
        description: Why the verdict is not C(pass).
        type: list
        elements: str
        default: []
      vm:
        description:
          - The C(vm) that M(xms.warm_migration.source_vm_info) returns; empty when the VM could not be read.
        type: dict
        default: {}
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: Writes nothing.
  diff_mode:
    description: Not applicable.
    support: none
"""

EXAMPLES = r"""
- name: Write the assessment
  xms.warm_migration.assessment_report:
    path: /srv/reports/assessment.html
    csv_path: /srv/reports/assessment.csv
    vms:
      - {name: web01, verdict: pass, vm: "{{ web01_facts.vm }}"}
      - {name: db01, verdict: fail, reasons: ["Hard disk 2 is a physical-mode RDM: snapshots and CBT cannot cover it"]}
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
path:
  description: The HTML page written.
  returned: always
  type: str
csv_path:
  description: The CSV file written, or null.
  returned: always
  type: str
verdicts:
  description: How many VMs got each verdict.
  returned: always
  type: dict
  sample: {pass: 41, warn: 7, fail: 2}
disks_total_bytes:
  description: The total size of the disks of the VMs assessed.
  returned: always
  type: int
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.xms.warm_migration.plugins.module_utils.module_base import run
from ansible_collections.xms.warm_migration.plugins.module_utils.report.build import write_assessment


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "csv_path": {"type": "path"},
            "title": {"type": "str", "default": "Warm migration assessment"},
            "vms": {
                "type": "list",
                "elements": "dict",
                "required": True,
                "options": {
                    "name": {"type": "str", "required": True},
                    "verdict": {"type": "str", "required": True, "choices": ["pass", "warn", "fail"]},
                    "reasons": {"type": "list", "elements": "str", "default": []},
                    "vm": {"type": "dict", "default": {}},
                },
            },
        },
        supports_check_mode=True,
    )
    run(module, "write the assessment", lambda: write_assessment(module.params, check_mode=module.check_mode))


if __name__ == "__main__":
    main()
