"""Run one sync of a lab VM in its own process, so a test can kill -9 it part-way.

Usage: python sync_child.py LAB_JSON CLOUDS_YAML VM_NAME STATE_DIR BANDWIDTH_LIMIT

The one change to the collection's behaviour (named here, as a test's own setting): its disks
checkpoint their journals every half second instead of every 30 s, so a kill a few seconds in
lands after each disk recorded progress, as one an hour into a real seed does.
"""

import contextlib
import dataclasses
import json
import os
import sys

from ansible_collections.xms.warm_migration.plugins.module_utils.migration import disk_copies, sync
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.context import MigrationContext
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack.client import OpenStackClient
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere import inventory
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere.client import VSphereClient, VSphereConnection

# The lab's VDDK (lab/vsphere/vddk): what a conversion host's vddk_libdir names.
VDDK_LIBDIR = os.path.join(os.environ.get("XMS_LAB_DIR", "/var/lib/xms-lab"), "vsphere", "vddk")


@contextlib.contextmanager
def lab_clients(lab_json: str, clouds: str, vm_name: str):
    """The child's own connections to both labs, and the VM: what a module run on a conversion host opens."""
    with open(lab_json) as handle:
        lab = json.load(handle)
    os.environ["OS_CLIENT_CONFIG_FILE"] = clouds
    openstack = OpenStackClient.connect(cloud="xms-lab")
    connection = VSphereConnection(hostname=lab["hostname"], username=lab["username"], password=lab["password"],
                                   port=lab["port"], validate_certs=False)  # fmt: skip
    with VSphereClient.connect(connection) as vsphere:
        yield vsphere, inventory.find_vm(vsphere, name=vm_name), openstack


if __name__ == "__main__":
    lab_json, clouds, vm_name, state_dir, limit = sys.argv[1:6]
    options = disk_copies.copy_options
    disk_copies.copy_options = lambda *args, **kwargs: dataclasses.replace(
        options(*args, **kwargs), checkpoint_seconds=0.5
    )
    with lab_clients(lab_json, clouds, vm_name) as (vsphere, vm, openstack):
        settings = disk_copies.SyncSettings(state_dir=state_dir, vddk_libdir=VDDK_LIBDIR, bandwidth_limit=int(limit))
        sync.run_sync(MigrationContext.read(vsphere, vm, openstack), settings)
