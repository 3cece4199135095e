#!/usr/bin/python
# Copyright: xms.warm_migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Import a seed carried on disks into the volumes of a warm migration."""

from __future__ import annotations

DOCUMENTATION = r"""
module: seed_import
short_description: Seed a migration's volumes from files that seed_export wrote and someone carried
version_added: 0.1.0
description:
  - The target-site half of M(xms.warm_migration.seed_export). The migration must be initialized
    (M(xms.warm_migration.warm_migration_init)) and not seeded yet.
  - Before anything changes it checks the manifest and the files - the export is of this VM and of its current
    disks and capacities, every file is whole (not shorter than its disk) and holds what was exported (SHA-256
    of the exported areas, bound to the migration, the disk, its change id and capacity, so entries swapped
    between disks fail; with O(manifest_key_file), a manifest signed at the source site), a qcow2 file is
    self-contained (no backing or data file; its header read under memory and CPU limits), and CBT was not reset on
    the VM since the export (the guest's writes since could not be known; then seeding over the network with
    M(xms.warm_migration.block_sync) is the only correct answer) - and refuses naming O(directory).
  - Then writes each file into its volume as a seed would (the data at the same offsets, the rest made zero),
    checks what reached the volume against the manifest's digest (a file changed after the check is caught here;
    that disk's change id is not recorded) and records the export's change ids as the seed. The next
    M(xms.warm_migration.block_sync) is an incremental of everything the guest wrote since the export.
  - An import that stops part-way is resumed by a rerun (or completed by the next block_sync, from a new
    snapshot); a rerun after a finished import changes nothing.
requirements:
  - python >= 3.9
seealso:
  - module: xms.warm_migration.seed_export
  - module: xms.warm_migration.block_sync
author:
  - xms.warm_migration developers (@xms)
extends_documentation_fragment:
  - xms.warm_migration.vsphere
  - xms.warm_migration.openstack
  - xms.warm_migration.source_vm
  - xms.warm_migration.data_path
options:
  directory:
    description:
      - The carried directory, as seed_export wrote it (C(manifest.json) and one file per disk).
    type: path
    required: true
  manifest_key_file:
    description:
      - The secret file the export was signed with (see M(xms.warm_migration.seed_export)), on the host that runs
        the module and readable only by its owner. Given, only a manifest signed with it is imported; a signed
        manifest is imported only with it.
    type: path
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: Runs every check (it reads the files once) and reports the bytes it would write.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
"""

EXAMPLES = r"""
- name: Seed db01's migration from the shipping disk
  xms.warm_migration.seed_import:
    hostname: vcenter.example.com
    username: migrator@vsphere.local
    password: "{{ vcenter_password }}"
    cloud: target
    vm_name: db01
    directory: /mnt/shipping/db01
"""

RETURN = r"""
kind:
  description: C(seed) when the files were written (or would be, in check mode), C(skipped) when already imported.
  returned: always
  type: str
  sample: seed
bytes_copied:
  description: Bytes read from the files and written to the volumes (in check mode, the data to write).
  returned: always
  type: int
  sample: 53687091200
duration_seconds:
  description: Wall time of the import in seconds.
  returned: always
  type: float
  sample: 301.2
migration:
  description: The migration's metrics after the import (see M(xms.warm_migration.migration_info)).
  returned: always
  type: dict
  sample: {"phase": "ready", "sync_count": 1, "lag_seconds": 259200}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.xms.warm_migration.plugins.module_utils import argument_spec as specs
from ansible_collections.xms.warm_migration.plugins.module_utils.migration import params as mparams
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.shipped import import_seed
from ansible_collections.xms.warm_migration.plugins.module_utils.module_base import run


def main() -> None:
    argument_spec = {
        **specs.vsphere_argument_spec(),
        **specs.openstack_argument_spec(),
        **specs.source_vm_argument_spec(),
        **specs.data_path_argument_spec(),
        "directory": {"type": "path", "required": True},
        "manifest_key_file": {"type": "path"},
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
        settings, key = mparams.sync_settings(module.params), mparams.manifest_key(module.params)
        with mparams.module_context(module.params) as ctx:
            outcome = import_seed(ctx, module.params["directory"], settings, key=key, check_mode=module.check_mode)
        for warning in outcome.warnings:
            module.warn(warning)
        return {
            "changed": outcome.changed,
            "kind": outcome.kind,
            "bytes_copied": outcome.bytes_copied,
            "duration_seconds": round(outcome.duration_s, 3),
            "migration": outcome.state.metrics() if outcome.state else {},
        }

    run(module, f"import the seed of VM '{name}'", body)


if __name__ == "__main__":
    main()
