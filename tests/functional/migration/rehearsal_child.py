"""Run one test migration of a lab VM in its own process, so a test can kill -9 it part-way.

Usage: python rehearsal_child.py LAB_JSON CLOUDS_YAML VM_NAME STATE_DIR
"""

import sys

from sync_child import VDDK_LIBDIR, lab_clients  # beside this file

from ansible_collections.xms.warm_migration.plugins.module_utils.conversion.virt_v2v import ConversionOptions
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.context import MigrationContext
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.rehearsal import (
    MigrationTestSettings,
    run_test,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.settings import SyncSettings

if __name__ == "__main__":
    lab_json, clouds, vm_name, state_dir = sys.argv[1:5]
    with lab_clients(lab_json, clouds, vm_name) as (vsphere, vm, openstack):
        settings = MigrationTestSettings(
            sync=SyncSettings(state_dir=state_dir, vddk_libdir=VDDK_LIBDIR), network="lab-net-b",
            conversion=ConversionOptions(timeout_s=1800, log_dir=state_dir),
        )  # fmt: skip
        run_test(MigrationContext.read(vsphere, vm, openstack), settings)
