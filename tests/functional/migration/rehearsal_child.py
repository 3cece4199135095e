"""Run one test migration of a lab VM in its own process, so a test can kill -9 it part-way.

Usage: python rehearsal_child.py LAB_JSON CLOUDS_YAML VM_NAME MIGRATION_ID STATE_DIR
"""

import json
import os
import sys

from ansible_collections.xms.warm_migration.plugins.module_utils.conversion.virt_v2v import ConversionOptions
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.rehearsal import (
    MigrationTestSettings,
    run_test,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.sync import SyncSettings
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack.client import OpenStackClient
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere import inventory
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere.client import VSphereClient, VSphereConnection

if __name__ == "__main__":
    lab_json, clouds, vm_name, migration_id, state_dir = sys.argv[1:6]
    with open(lab_json) as handle:
        lab = json.load(handle)
    os.environ["OS_CLIENT_CONFIG_FILE"] = clouds
    openstack = OpenStackClient.connect(cloud="xms-lab")
    connection = VSphereConnection(hostname=lab["hostname"], username=lab["username"], password=lab["password"],
                                   port=lab["port"], validate_certs=False)  # fmt: skip
    with VSphereClient.connect(connection) as vsphere:
        vm = inventory.find_vm(vsphere, name=vm_name)
        settings = MigrationTestSettings(
            sync=SyncSettings(state_dir=state_dir, vddk_libdir=state_dir), network="lab-net-b",
            conversion=ConversionOptions(timeout_s=1800, log_dir=state_dir),
        )  # fmt: skip
        run_test(vsphere, vm, openstack, migration_id, settings)
