"""Run one cutover of a lab VM in its own process, so a test can kill -9 it part-way (here: while
virt-v2v converts its overlays).

Usage: python cutover_child.py LAB_JSON CLOUDS_YAML VM_NAME STATE_DIR
"""

import sys

from sync_child import VDDK_LIBDIR, lab_clients  # beside this file

from ansible_collections.xms.warm_migration.plugins.module_utils.conversion.virt_v2v import ConversionOptions
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.context import MigrationContext
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.cutover import CutoverSettings, run_cutover
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.initialize import (
    NetworkMapping,
    TargetSettings,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.settings import SyncSettings

if __name__ == "__main__":
    lab_json, clouds, vm_name, state_dir = sys.argv[1:5]
    with lab_clients(lab_json, clouds, vm_name) as (vsphere, vm, openstack):
        target = TargetSettings(volume_type="standard-ssd", availability_zone="az1",
                                network_map=[NetworkMapping(source="DC0_DVPG0", network="lab-net-a")])  # fmt: skip
        sync = SyncSettings(state_dir=state_dir, vddk_libdir=VDDK_LIBDIR)
        settings = CutoverSettings(sync=sync, conversion=ConversionOptions(timeout_s=1800, log_dir=state_dir))
        run_cutover(MigrationContext.read(vsphere, vm, openstack), target, settings)
