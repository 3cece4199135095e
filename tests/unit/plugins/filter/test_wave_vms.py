"""The report's wave: each host's VM name (its own name unless the inventory says another) and UUID."""

from ansible_collections.xms.warm_migration.plugins.filter.wave_vms import wave_vms


def test_each_host_gives_its_vm_name_and_uuid():
    hostvars = {"web01": {}, "db": {"warm_migration_vm_name": "db01", "warm_migration_vm_uuid": "5032"}}
    assert wave_vms(["web01", "db"], hostvars) == [{"name": "web01", "uuid": ""}, {"name": "db01", "uuid": "5032"}]


def test_localhost_is_no_vm_so_a_report_played_there_covers_the_project():
    assert wave_vms(["localhost"], {"localhost": {}}) == []
