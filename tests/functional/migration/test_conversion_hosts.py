"""A wave spread over two conversion hosts reached over real SSH, through the collection's playbooks.

The hosts are network namespaces with their own sshd, address, hostname and state_dir
(conversion_hosts.py). No VM names its host: the conversion_host filter spreads them. Each VM's
seed, syncs and cutover run on its host, its lock lives there, and while one host syncs a
migration the other is refused.
"""

import json
import os
import sys
import threading

import pytest

from ansible_collections.xms.warm_migration.plugins.module_utils.migration import store
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.context import MigrationContext
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere import inventory

from ..openstack.conftest import CLOUDS
from ..vsphere.conftest import VDDK_LIBDIR
from .conftest import assert_volumes_equal_source, lab_cmd, reset_vm, wave_playbooks
from .conversion_hosts import ConversionHosts

WAVE = {"lab-vm-1": "conv-a", "lab-vm-2": "conv-b"}  # what the filter picks: name order, fewest VMs first


@pytest.fixture
def wave(vsphere, openstack):
    vms = {name: inventory.find_vm(vsphere, name=name) for name in WAVE}
    for vm in vms.values():
        reset_vm(vsphere, vm, openstack)
    yield vms
    for vm in vms.values():
        reset_vm(vsphere, vm, openstack)


@pytest.fixture
def hosts(tmp_path):
    env = {**os.environ, "OS_CLIENT_CONFIG_FILE": CLOUDS}
    with ConversionHosts(str(tmp_path / "hosts"), ["conv-a", "conv-b"], env) as made:
        yield made


def test_a_wave_runs_across_two_conversion_hosts_over_ssh(vsphere, openstack, lab, wave, hosts, tmp_path):
    playbook = wave_playbooks(lab, tmp_path, {
        "conversion_hosts": {"hosts": {h.name: h.inventory_vars(hosts.key) for h in hosts.hosts}},
        "wave1": {
            "hosts": {name: {} for name in WAVE},
            "vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                     "warm_migration_volume_type": "standard-ssd", "warm_migration_availability_zone": "az1",
                     "warm_migration_network_map": [{"source": "DC0_DVPG0", "network": "lab-net-a"}],
                     "cutover_conversion": {"skip": True}, "cutover_validation": {"enabled": False},
                     "seed_poll_interval": 2, "sync_poll_interval": 2,
                     "cutover_poll_interval": 2},
        },
    }, {"vddk_libdir": VDDK_LIBDIR})  # state_dir: the default, private per host  # fmt: skip

    ids = {name: MigrationContext.read(vsphere, vm).migration_id for name, vm in wave.items()}
    by_name = {h.name: h for h in hosts.hosts}
    playbook("seed")
    for name, host in WAVE.items():
        state = store.load(openstack, ids[name])
        assert state.seeded and state.sync_count == 1
        # The migration's lock and journal directory are on its host, and only there.
        mine, other = by_name[host], next(h for h in hosts.hosts if h.name != host)
        assert os.path.exists(os.path.join(mine.state_dir, f"{ids[name]}.lock")), os.listdir(mine.state_dir)
        assert not os.path.exists(os.path.join(other.state_dir, f"{ids[name]}.lock"))

    for name in wave:
        lab_cmd("write", name, str(state_disk_key(openstack, ids[name])), "4", str(256 << 10))
    playbook("sync")
    for name, vm in wave.items():
        state = store.load(openstack, ids[name])
        assert state.sync_count == 2 and state.bytes_incr > 0
        assert_volumes_equal_source(vsphere, vm, openstack, state)

    # lab-vm-2 copied whole and slowly on its host, conv-b; meanwhile conv-a is asked to sync it.
    slow = {"vddk_libdir": VDDK_LIBDIR, "bandwidth_limit": 4 << 20}
    first = {}
    racing = threading.Thread(target=lambda: first.update(run=playbook(
        "sync", "--limit", "lab-vm-2", "-e", "sync_force_full=true", "-e",
        json.dumps({"warm_migration_data_path": slow}))))  # fmt: skip
    racing.start()
    while racing.is_alive() and not store.load(openstack, ids["lab-vm-2"]).owner:
        racing.join(0.2)
    second = playbook("sync", "--limit", "lab-vm-2", "-e", "warm_migration_conversion_host=conv-a", check=False)
    racing.join()
    assert first["run"].returncode == 0
    assert second.returncode != 0 and "is held by conv-b:" in second.stdout, second.stdout[-3000:]

    playbook("cutover")
    for name in WAVE:
        state = store.load(openstack, ids[name])
        assert state.phase == "completed" and state.owner == "", (name, state.phase, state.last_error)


def state_disk_key(openstack, migration_id) -> int:
    return store.load(openstack, migration_id).disks[0].disk_key
