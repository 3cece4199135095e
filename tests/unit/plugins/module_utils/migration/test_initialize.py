"""The NIC mapping: each source NIC goes to the network its source network is mapped to, in the VM's NIC order;
an unmapped source network is refused naming network_map and the network to add."""

from types import SimpleNamespace

import pytest

from ansible_collections.xms.warm_migration.plugins.module_utils.migration.errors import PreflightError
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.initialize import (
    NetworkMapping,
    TargetSettings,
    nic_targets,
)


def vm(*nics):
    return SimpleNamespace(name="web01", nics=[SimpleNamespace(mac=mac, network=net) for mac, net in nics])


def test_each_nic_goes_to_its_source_networks_target_in_the_vms_order():
    target = TargetSettings(network_map=[NetworkMapping("DMZ", "dmz-net", "dmz-v4"), NetworkMapping("App", "app-net")])
    pairs = nic_targets(vm(("00:50:56:00:00:02", "App"), ("00:50:56:00:00:01", "DMZ"), ("00:50:56:00:00:03", "App")),
                        target)  # fmt: skip
    assert [(nic.mac, m.network, m.subnet) for nic, m in pairs] == [
        ("00:50:56:00:00:02", "app-net", None),
        ("00:50:56:00:00:01", "dmz-net", "dmz-v4"),
        ("00:50:56:00:00:03", "app-net", None),
    ]


def test_an_unmapped_source_network_is_refused_naming_it():
    with pytest.raises(PreflightError) as err:
        nic_targets(vm(("00:50:56:00:00:02", "Backup")), TargetSettings(network_map=[NetworkMapping("App", "app-net")]))
    assert err.value.parameter == "network_map" and "source: 'Backup'" in str(err.value)
