#!/usr/bin/python
# Copyright: xms.warm_migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Write a wave's report: an HTML page, and optionally its metrics for Prometheus."""

from __future__ import annotations

DOCUMENTATION = r"""
module: wave_report
short_description: Write a wave's report - an HTML page with charts, and its metrics for Prometheus
version_added: 0.1.0
description:
  - Reads the migration record of the wave's VMs from the target cloud and writes one self-contained
    HTML page (no script, no external asset) - per VM its phase, last sync, lag, bytes, syncs, rate,
    projected or measured downtime, instance and last error; charts of lag, of the last syncs' bytes
    and durations, and of each cutover's timeline.
  - With O(metrics_path), also writes the same figures in the Prometheus text format, for
    node_exporter's textfile collector, labelled by VM, migration and wave.
  - Both files are replaced atomically - a browser or node_exporter reading them sees the old file or
    the new one.
requirements:
  - python >= 3.9
seealso:
  - module: xms.warm_migration.migration_info
author:
  - xms.warm_migration developers (@xms)
extends_documentation_fragment:
  - xms.warm_migration.openstack
options:
  path:
    description:
      - Where to write the HTML page. Its directory must exist.
    type: path
    required: true
  metrics_path:
    description:
      - Where to write the metrics file, in a directory node_exporter's
        C(--collector.textfile.directory) reads (Debian - C(/var/lib/prometheus/node-exporter)). The name
        must end in C(.prom); one file per wave.
      - Not written when unset.
    type: path
  wave:
    description:
      - The wave's name, as the page's title and the metrics' C(wave) label.
    type: str
    required: true
  vms:
    description:
      - The VMs of the wave; a VM is matched to its migration by O(vms[].uuid) when given, else by name.
      - When empty, every migration of the target project is reported.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: The VM's name.
        type: str
        required: true
      uuid:
        description: The VM's instance UUID.
        type: str
  title:
    description:
      - The page's heading.
    type: str
    default: Warm migration report
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: Reads the record; writes nothing.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
"""

EXAMPLES = r"""
- name: Write the report of wave1 and its metrics
  xms.warm_migration.wave_report:
    cloud: target
    wave: wave1
    vms: [{name: web01}, {name: db01, uuid: 5032c8a5-9c5b-0c4f-8f6e-2b9e8a1f4c11}]
    path: /srv/reports/wave1.html
    metrics_path: /var/lib/prometheus/node-exporter/xms_wave1.prom
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
path:
  description: The HTML page written.
  returned: always
  type: str
  sample: /srv/reports/wave1.html
metrics_path:
  description: The metrics file written, or null.
  returned: always
  type: str
  sample: /var/lib/prometheus/node-exporter/xms_wave1.prom
table:
  description: The report as lines of a fixed-width table, for the playbook's output.
  returned: always
  type: list
  elements: str
missing:
  description: VMs of the wave that have no migration in the target project.
  returned: always
  type: list
  elements: str
  sample: [app02]
migrations:
  description: The wave's migrations, as M(xms.warm_migration.migration_info) returns them.
  returned: always
  type: list
  elements: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.xms.warm_migration.plugins.module_utils import argument_spec as specs
from ansible_collections.xms.warm_migration.plugins.module_utils.module_base import run
from ansible_collections.xms.warm_migration.plugins.module_utils.report.build import write_report


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            **specs.openstack_argument_spec(),
            "path": {"type": "path", "required": True},
            "metrics_path": {"type": "path"},
            "wave": {"type": "str", "required": True},
            "vms": {
                "type": "list",
                "elements": "dict",
                "default": [],
                "options": {"name": {"type": "str", "required": True}, "uuid": {"type": "str"}},
            },
            "title": {"type": "str", "default": "Warm migration report"},
        },
        supports_check_mode=True,
    )
    run(module, f"write the report of wave '{module.params['wave']}'",
        lambda: write_report(module.params, check_mode=module.check_mode))  # fmt: skip


if __name__ == "__main__":
    main()
