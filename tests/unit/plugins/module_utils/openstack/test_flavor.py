"""The flavor a migrated VM gets when none is named: the smallest that holds its vCPUs and memory."""

from types import SimpleNamespace

from ansible_collections.xms.warm_migration.plugins.module_utils.openstack.preflight import best_flavor


def flavor(name, vcpus, ram, disk=0):
    return SimpleNamespace(name=name, vcpus=vcpus, ram=ram, disk=disk)


def test_the_smallest_flavor_that_holds_the_vm_is_chosen_and_ties_go_by_disk_then_name():
    flavors = [flavor("m1.large", 4, 8192), flavor("m1.medium", 2, 4096, 40), flavor("m1.medium-b", 2, 4096, 20),
               flavor("c1.medium", 2, 4096, 20), flavor("m1.small", 1, 2048)]  # fmt: skip
    assert best_flavor(flavors, 2, 4096).name == "c1.medium"  # same size and disk: by name
    assert best_flavor(flavors, 1, 3000).name == "c1.medium"  # memory rounds up to the next size that holds it
    assert best_flavor(flavors, 3, 1024).name == "m1.large"  # vCPUs too
    assert best_flavor(flavors, 8, 1024) is None  # nothing holds it: the caller names the parameter
