"""Picking a VM's conversion host: pinned wins, else balanced by what is assigned, the same every run."""

from collections import Counter

from ansible_collections.xms.warm_migration.plugins.filter.conversion_host import conversion_host


def inventory(vms, hosts, pinned=None):
    hostvars = {name: {} for name in [*vms, *hosts]}
    for vm, host in (pinned or {}).items():
        hostvars[vm]["warm_migration_conversion_host"] = host
    groups = {"all": [*vms, *hosts], "wave1": list(vms)}
    if hosts:
        groups["conversion_hosts"] = list(hosts)
    return hostvars, groups


def test_a_vm_that_names_its_host_keeps_it():
    hostvars, groups = inventory(["web1", "web2"], ["conv-a", "conv-b"], {"web1": "conv-b"})
    assert conversion_host("web1", hostvars, groups, ["web1"], "wave1") == "conv-b"


def test_without_a_conversion_hosts_group_it_is_localhost():
    hostvars, groups = inventory(["web1"], [])
    assert conversion_host("web1", hostvars, groups, ["web1"], "wave1") == "localhost"


def test_the_others_are_balanced_around_the_pinned_ones():
    vms = [f"vm{i:02}" for i in range(7)]
    hostvars, groups = inventory(vms, ["conv-a", "conv-b", "conv-c"], {"vm00": "conv-a", "vm01": "conv-a"})
    picked = {vm: conversion_host(vm, hostvars, groups, vms, "wave1") for vm in vms}
    # conv-a holds two pinned VMs: the next four go to b and c, the last tie to the first host in name order
    assert [picked[vm] for vm in vms[2:]] == ["conv-b", "conv-c", "conv-b", "conv-c", "conv-a"]


def test_the_same_inventory_gives_the_same_host_whatever_the_order_of_its_lists():
    vms = ["db1", "web1", "web2", "app1"]
    hostvars, groups = inventory(vms, ["conv-b", "conv-a"])
    first = {vm: conversion_host(vm, hostvars, groups, vms, "wave1") for vm in vms}
    groups = {name: list(reversed(members)) for name, members in groups.items()}
    assert {vm: conversion_host(vm, hostvars, groups, list(reversed(vms)), "wave1") for vm in vms} == first
    assert sorted(Counter(first.values()).values()) == [2, 2]


def test_the_vms_are_balanced_over_the_wave_not_the_whole_inventory():
    # An inventory of a whole vCenter: 40 VMs, 30 of them (other waves) pinned to conv-a; the play is a wave of 4.
    vms = [f"vm{i:02}" for i in range(40)]
    hostvars, groups = inventory(vms, ["conv-a", "conv-b"], {vm: "conv-a" for vm in vms[:30]})
    groups["wave2"] = ["vm30", "vm31", "vm32", "vm33"]
    picked = {vm: conversion_host(vm, hostvars, groups, groups["wave2"], "wave2") for vm in groups["wave2"]}
    assert Counter(picked.values()) == {"conv-a": 2, "conv-b": 2}
    # counted over the inventory, conv-a's 30 pinned VMs would have sent the whole wave to conv-b
    assert {conversion_host(vm, hostvars, groups, groups["all"], "all") for vm in groups["wave2"]} == {"conv-b"}


def test_a_limit_to_part_of_the_wave_keeps_each_vm_on_its_host():
    vms = ["db1", "web1", "web2", "app1"]
    hostvars, groups = inventory(vms, ["conv-a", "conv-b"])
    whole = {vm: conversion_host(vm, hostvars, groups, vms, "wave1") for vm in vms}
    assert {vm: conversion_host(vm, hostvars, groups, [vm], "wave1") for vm in vms} == whole  # --limit <vm>
    # a play whose hosts are no group (a pattern) balances over its own hosts
    assert conversion_host("web2", hostvars, groups, ["web2"], "wave1:&web*") == "conv-a"
