"""Everything the cutover will use is checked while the source still runs (both labs).

Each bad input is refused with a PreflightError naming its parameter; afterwards the source VM is
still powered on and the migration's cutover has not begun (phase ready, no step recorded).
"""

import dataclasses
import ipaddress

import pytest

from ansible_collections.xms.warm_migration.plugins.module_utils.conversion.errors import ConversionError
from ansible_collections.xms.warm_migration.plugins.module_utils.conversion.virt_v2v import ConversionOptions
from ansible_collections.xms.warm_migration.plugins.module_utils.migration import store
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.context import MigrationContext
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.cutover import CutoverSettings, run_cutover
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.errors import PreflightError
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.initialize import (
    NetworkMapping,
    TargetSettings,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.record import Phase
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.settings import SyncSettings
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.sync import run_sync
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack.client import OpenStackClient
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere import inventory

from ..vsphere.conftest import VDDK_LIBDIR
from .conftest import assert_volumes_equal_source, delete_migration, power_state, reset_vm, start

VM = "lab-vm-1"


@pytest.fixture(scope="module")
def seeded(vsphere, openstack, tmp_path_factory):
    """lab-vm-1 initialized and seeded once for every case; removed at the end."""
    vm = inventory.find_vm(vsphere, name=VM)
    migration_id = MigrationContext.read(vsphere, vm).migration_id
    delete_migration(openstack, migration_id)
    target = TargetSettings(volume_type="standard-ssd", availability_zone="az1",
                            network_map=[NetworkMapping(source="DC0_DVPG0", network="lab-net-a")])  # fmt: skip
    sync = SyncSettings(state_dir=str(tmp_path_factory.mktemp("state")), vddk_libdir=VDDK_LIBDIR)
    start(vsphere, vm, openstack, target)
    run_sync(MigrationContext.read(vsphere, vm, openstack), sync)
    yield vm, migration_id, target, sync
    delete_migration(openstack, migration_id)


def nic_mac(vsphere, vm):
    return inventory.inventory(vsphere, vm).nics[0].mac


def refused(vsphere, vm, openstack, migration_id, target, settings):
    with pytest.raises((PreflightError, ConversionError)) as err:
        run_cutover(MigrationContext.read(vsphere, vm, openstack), target, settings)
    state = store.load(openstack, migration_id)
    assert power_state(vsphere, vm) == "poweredOn", "the source went down for an input that was bad from the start"
    assert (state.phase, state.cutover_step) == (Phase.READY, "")
    return err.value


def test_a_flavor_that_does_not_exist(vsphere, openstack, seeded):
    vm, migration_id, target, sync = seeded
    bad = dataclasses.replace(target, flavor="m9.nonexistent")
    err = refused(vsphere, vm, openstack, migration_id, bad, CutoverSettings(sync=sync))
    assert err.parameter == "flavor" and "m9.nonexistent" in str(err)


def test_a_fixed_ip_outside_its_subnet(vsphere, openstack, seeded):
    vm, migration_id, target, sync = seeded
    bad = dataclasses.replace(target, fixed_ips={nic_mac(vsphere, vm): "10.99.0.5"})
    err = refused(vsphere, vm, openstack, migration_id, bad, CutoverSettings(sync=sync))
    assert err.parameter == "fixed_ips" and "10.99.0.5" in str(err)


@pytest.mark.parametrize("which", ["gateway", "network", "broadcast"])
def test_a_fixed_ip_that_is_its_subnets_gateway_network_or_broadcast_address(vsphere, openstack, seeded, which):
    vm, migration_id, target, sync = seeded
    net = openstack.conn.network.find_network("lab-net-a")
    subnet = next(iter(openstack.conn.network.subnets(network_id=net.id, ip_version=4)))
    cidr = ipaddress.ip_network(subnet.cidr)
    address = {"gateway": subnet.gateway_ip, "network": cidr.network_address, "broadcast": cidr.broadcast_address}
    bad = dataclasses.replace(target, fixed_ips={nic_mac(vsphere, vm): str(address[which])})
    err = refused(vsphere, vm, openstack, migration_id, bad, CutoverSettings(sync=sync))
    assert err.parameter == "fixed_ips" and f"the subnet's {which} address" in str(err)


def test_a_port_created_meanwhile_with_the_source_mac(vsphere, openstack, seeded):
    vm, migration_id, target, sync = seeded
    net = openstack.conn.network.find_network("lab-net-a")
    squatter = openstack.conn.network.create_port(network_id=net.id, mac_address=nic_mac(vsphere, vm),
                                                  name="someone-else")  # fmt: skip
    try:
        err = refused(vsphere, vm, openstack, migration_id, target, CutoverSettings(sync=sync))
        assert err.parameter == "network_map" and squatter.id in str(err)
    finally:
        openstack.conn.network.delete_port(squatter.id)


def test_a_network_the_project_does_not_own(vsphere, openstack, seeded):
    """lab-net-shared is the admin's, shared: the project sees it but may not choose a port's MAC there."""
    vm, migration_id, target, sync = seeded
    bad = dataclasses.replace(target, network_map=[NetworkMapping(source="DC0_DVPG0", network="lab-net-shared")])
    err = refused(vsphere, vm, openstack, migration_id, bad, CutoverSettings(sync=sync))
    assert err.parameter == "network_map" and "belongs to another project" in str(err)


def test_a_missing_key_pair_and_security_group(vsphere, openstack, seeded):
    vm, migration_id, target, sync = seeded
    err = refused(vsphere, vm, openstack, migration_id, target,
                  CutoverSettings(sync=sync, key_name="no-such-key", security_groups=["no-such-group"]))  # fmt: skip
    assert err.parameter == "key_name" and "no-such-group" in str(err)


def test_a_windows_guest_without_virtio_drivers(vsphere, openstack, seeded, monkeypatch):
    """Mock of the guest OS id (the lab's VMs are not Windows): conversion would fail after the shutdown."""
    vm, migration_id, target, sync = seeded
    real = inventory.inventory

    def as_windows(*args, **kwargs):
        return dataclasses.replace(real(*args, **kwargs), guest_id="windows2019srv_64Guest")

    monkeypatch.setattr(inventory, "inventory", as_windows)
    err = refused(vsphere, vm, openstack, migration_id, target,
                  CutoverSettings(sync=sync, conversion=ConversionOptions()))  # fmt: skip
    assert err.parameter == "conversion.virtio_win"


def test_a_project_without_instance_quota(vsphere, tmp_path):
    """xms-small may hold the volumes but no instance: refused before the shutdown, by its quota."""
    small = OpenStackClient.connect(cloud="xms-small")
    vm = inventory.find_vm(vsphere, name="lab-vm-2")
    migration_id = MigrationContext.read(vsphere, vm).migration_id
    delete_migration(small, migration_id)
    target = TargetSettings(volume_type="standard-ssd", availability_zone="az1",
                            network_map=[NetworkMapping(source="DC0_DVPG0", network="small-net")])  # fmt: skip
    sync = SyncSettings(state_dir=str(tmp_path / "state"), vddk_libdir=VDDK_LIBDIR)
    try:
        start(vsphere, vm, small, target)
        run_sync(MigrationContext.read(vsphere, vm, small), sync)
        err = refused(vsphere, vm, small, migration_id, target, CutoverSettings(sync=sync))
        assert err.parameter == "cloud" and "quota instances" in str(err)
    finally:
        delete_migration(small, migration_id)


def test_an_encrypted_volume_nova_would_reformat_at_its_first_attach(vsphere, openstack, tmp_path):
    """A finding of the lab: Nova's libvirt driver (Zed) runs cryptsetup luksFormat on an encrypted volume whose
    path is no LUKS device; Cinder's NFS driver keeps an encrypted volume as a qcow2 file with LUKS inside. The
    instance would fail and the replica be destroyed: refused while the source runs, the replica intact."""
    vm = inventory.find_vm(vsphere, name="lab-vm-2")
    reset_vm(vsphere, vm, openstack)
    migration_id = MigrationContext.read(vsphere, vm).migration_id
    target = TargetSettings(volume_type="standard-ssd-encrypted", availability_zone="az1",
                            network_map=[NetworkMapping(source="DC0_DVPG0", network="lab-net-a")])  # fmt: skip
    sync = SyncSettings(state_dir=str(tmp_path / "state"), vddk_libdir=VDDK_LIBDIR)
    try:
        start(vsphere, vm, openstack, target)
        run_sync(MigrationContext.read(vsphere, vm, openstack), sync)
        err = refused(vsphere, vm, openstack, migration_id, target, CutoverSettings(sync=sync))
        assert err.parameter == "volume_type" and "cryptsetup" in str(err) and "qcow2" in str(err)
        assert_volumes_equal_source(vsphere, vm, openstack, store.load(openstack, migration_id))
    finally:
        reset_vm(vsphere, vm, openstack)
