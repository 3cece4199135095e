#!/usr/bin/python
# Copyright: xms.warm_migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Export the seed of a VM to files, to be carried to the target site instead of copied over the link."""

from __future__ import annotations

DOCUMENTATION = r"""
module: seed_export
short_description: Write one snapshot's data of a running VM to files, to ship the seed on disks
version_added: 0.1.0
description:
  - For a VM whose first copy is too large for the link. Takes one snapshot of the source VM (all disks at one
    point in time), writes each disk's allocated areas at their offsets into a sparse file in O(directory)
    (C(disk-<key>.raw) or C(.qcow2)), then a C(manifest.json) - the VM, each disk's key, capacity and change id,
    the areas written and a SHA-256 of their bytes as read back from the file, bound to the migration, the disk,
    its change id and capacity - and removes the snapshot. CBT's change ids stay valid without it.
  - Carry the directory to the target site (any copy that keeps the files whole; C(cp -r --sparse=always) keeps
    them sparse) and import it with M(xms.warm_migration.seed_import).
  - CBT is switched on when it is off. The manifest is written last; a directory without one holds an unfinished
    export, which a rerun starts over. A rerun after a finished export changes nothing.
  - Needs only vCenter, not the target cloud.
requirements:
  - python >= 3.9
seealso:
  - module: xms.warm_migration.seed_import
  - module: xms.warm_migration.block_sync
author:
  - xms.warm_migration developers (@xms)
extends_documentation_fragment:
  - xms.warm_migration.vsphere
  - xms.warm_migration.source_vm
  - xms.warm_migration.data_path
options:
  directory:
    description:
      - The directory to write the files and the manifest into, one per VM (created when missing, mode 0700).
    type: path
    required: true
  format:
    description:
      - C(raw) sparse files, or C(qcow2) (compact on file systems or media without sparse files; needs qemu-img).
    type: str
    choices: [raw, qcow2]
    default: raw
  manifest_key_file:
    description:
      - A file on the host that runs the module, readable only by its owner, whose first line is a secret the
        target site holds too. The manifest is then signed with it (HMAC-SHA256), and
        M(xms.warm_migration.seed_import) given the same file accepts only a manifest it signed; without it
        the digests prove a file whole, not who wrote it.
    type: path
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: Says whether an export would run; takes no snapshot.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
notes:
  - Of the data path options, O(state_dir) (the host lock shared with the VM's syncs), O(vddk_libdir),
    O(vddk_transports), O(reader), O(nfs_mounts) and O(bandwidth_limit) are used; the others are accepted so that one
    C(module_defaults) group serves every data-path module.
"""

EXAMPLES = r"""
- name: Export the seed of db01 to the shipping disk
  xms.warm_migration.seed_export:
    hostname: vcenter.example.com
    username: migrator@vsphere.local
    password: "{{ vcenter_password }}"
    vm_name: db01
    directory: /mnt/shipping/db01
"""

RETURN = r"""
manifest:
  description: What was exported (in check mode, the VM and format only).
  returned: always
  type: dict
  sample: {"migration_id": "vm-5032c8a5", "vm_name": "db01", "snapshot_at": "2026-11-24T03:00:00Z", "format": "raw",
           "disks": [{"disk_key": 2000, "capacity": 107374182400, "change_id": "52 3f .../4", "file": "disk-2000.raw"}]}
bytes_written:
  description: Bytes of data written to the files by this run.
  returned: always
  type: int
  sample: 53687091200
duration_seconds:
  description: Wall time of the export in seconds.
  returned: always
  type: float
  sample: 812.4
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.xms.warm_migration.plugins.module_utils import argument_spec as specs
from ansible_collections.xms.warm_migration.plugins.module_utils.migration import params as mparams
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.shipped import FORMATS, export_seed
from ansible_collections.xms.warm_migration.plugins.module_utils.module_base import run


def main() -> None:
    argument_spec = {
        **specs.vsphere_argument_spec(),
        **specs.source_vm_argument_spec(),
        **specs.data_path_argument_spec(),
        "directory": {"type": "path", "required": True},
        "format": {"type": "str", "default": "raw", "choices": list(FORMATS)},
        "manifest_key_file": {"type": "path"},
    }
    module = AnsibleModule(
        argument_spec=argument_spec,
        required_one_of=specs.SOURCE_VM_ONE_OF + specs.PASSWORD_ONE_OF,
        mutually_exclusive=specs.SOURCE_VM_ONE_OF + specs.PASSWORD_ONE_OF,
        supports_check_mode=True,
    )
    name = module.params["vm_name"] or module.params["vm_uuid"] or module.params["vm_moref"]

    def body():
        settings, key = mparams.sync_settings(module.params), mparams.manifest_key(module.params)
        with mparams.module_context(module.params, openstack=False) as ctx:
            outcome = export_seed(ctx, module.params["directory"], module.params["format"], settings, key=key,
                                  check_mode=module.check_mode)  # fmt: skip
        for warning in outcome.warnings:
            module.warn(warning)
        manifest = outcome.manifest.as_dict()
        for disk in manifest["disks"]:
            disk.pop("extents")  # the file's map: in manifest.json, too long for a result
        return {
            "changed": outcome.changed,
            "manifest": manifest,
            "bytes_written": outcome.bytes_written,
            "duration_seconds": round(outcome.duration_s, 3),
        }

    run(module, f"export the seed of VM '{name}'", body)


if __name__ == "__main__":
    main()
