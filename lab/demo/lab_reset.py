"""Put a lab VM back as it was before any migration: used by the demo and by the tests.

A cutover leaves an instance, its ports, the volumes, a powered-off source and
a "migrated" note on it, a test migration its server, ports and clones; the next
run of the demo or of a test wants none of them.
"""

from pyVmomi import vim

from ansible_collections.xms.warm_migration.plugins.module_utils.migration.context import MigrationContext
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack import instance as os_instance
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack import volumes as os_volumes
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack.attach import release_and_delete
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere import inventory
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere.power import power_on


def power_state(vsphere, vm) -> str:
    return str(inventory.properties(vsphere, vm, ["runtime.powerState"])["runtime.powerState"])


def annotation(vsphere, vm) -> str:
    return inventory.properties(vsphere, vm, ["config"])["config"].annotation or ""


def delete_migration(openstack, migration_id: str) -> None:
    """Delete a migration's volumes, releasing what a killed run left attached here first."""
    release_and_delete(openstack, [volume.id for volume in os_volumes.find_volumes(openstack, migration_id)])


def reset_vm(vsphere, vm, openstack) -> None:
    """No instance, no ports, no volumes of this VM's migration or of its test; the VM powered on, without the note."""
    migration_id = MigrationContext.read(vsphere, vm).migration_id
    os_instance.delete_test_instance(openstack, migration_id, 120)
    replicas = [volume.id for volume in os_volumes.find_volumes(openstack, migration_id)]
    release_and_delete(openstack, os_volumes.find_test_clones(openstack, os_instance.TEST_TAG, migration_id, replicas))
    server = os_instance.find_server(openstack, migration_id)
    if server is not None:
        os_instance._delete_server(openstack, server.id, 120)
    for port in openstack.conn.network.ports():
        if (port.name or "").startswith(f"xms-{migration_id}-"):
            openstack.conn.network.delete_port(port.id)
    delete_migration(openstack, migration_id)
    power_on(vsphere, vm)
    if annotation(vsphere, vm):
        vsphere.wait_task(vm.ReconfigVM_Task(vim.vm.ConfigSpec(annotation="")), "clearing the annotation")


def main(argv: list) -> int:
    """``python lab/demo/lab_reset.py VM...``: reset lab VMs (the integration targets call this)."""
    import json
    import os

    from ansible_collections.xms.warm_migration.plugins.module_utils.openstack.client import OpenStackClient
    from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere.client import (
        VSphereClient,
        VSphereConnection,
    )

    lab_dir = os.environ.get("XMS_LAB_DIR", "/var/lib/xms-lab")
    with open(os.path.join(lab_dir, "vsphere", "lab.json")) as handle:
        lab = json.load(handle)
    os.environ["OS_CLIENT_CONFIG_FILE"] = os.path.join(lab_dir, "openstack", "clouds.yaml")
    openstack = OpenStackClient.connect(cloud="xms-lab")
    connection = VSphereConnection(hostname=lab["hostname"], port=lab["port"], username=lab["username"],
                                   password=lab["password"], validate_certs=False)  # fmt: skip
    with VSphereClient.connect(connection) as vsphere:
        for name in argv:
            reset_vm(vsphere, inventory.find_vm(vsphere, name=name), openstack)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
