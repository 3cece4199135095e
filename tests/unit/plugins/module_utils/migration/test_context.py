"""One context per module run: vCenter, the VM and its inventory once, the cloud only when the run needs it.

vCenter, the cloud and the inventory read are replaced by named fakes that record their calls."""

from types import SimpleNamespace

import pytest

from ansible_collections.xms.warm_migration.plugins.module_utils.migration import params
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.context import MigrationContext

PARAMS = {"hostname": "vcenter.example.com", "username": "migrator", "password": "s3cret", "port": 443,
          "vcenter_validate_certs": True, "vm_name": "web01", "cloud": "xms-lab"}  # fmt: skip


class FakeVSphere:
    """Stands for a logged-in session; records its logout."""

    def __init__(self, calls):
        self.calls = calls

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.calls.append("logout")


@pytest.fixture
def calls(monkeypatch):
    made = []
    monkeypatch.setattr(params, "connect_vsphere", lambda p: made.append("vcenter") or FakeVSphere(made))
    monkeypatch.setattr(params, "find_source_vm", lambda client, p: made.append("find") or "vm-42")
    monkeypatch.setattr(params, "connect_openstack", lambda p: made.append("cloud") or "cloud")
    inventory = SimpleNamespace(instance_uuid="5001", name="web01")
    monkeypatch.setattr(
        params.MigrationContext, "read",
        classmethod(lambda cls, vs, vm, os_=None: made.append("inventory") or cls(vs, vm, inventory, os_)),
    )  # fmt: skip
    return made


def test_a_run_connects_once_reads_the_inventory_once_and_logs_out(calls):
    with params.module_context(PARAMS) as ctx:
        assert (ctx.vm, ctx.openstack, ctx.migration_id, ctx.vm_name) == ("vm-42", "cloud", "vm-5001", "web01")
        assert calls == ["vcenter", "find", "cloud", "inventory"]
    assert calls[-1] == "logout"


def test_a_run_without_the_cloud_never_connects_to_it(calls):
    with params.module_context(PARAMS, openstack=False) as ctx:
        assert ctx.openstack is None
    assert "cloud" not in calls


def test_the_migration_id_is_the_instance_uuid_and_never_the_name():
    renamed = MigrationContext(vsphere=None, vm=None, inventory=SimpleNamespace(instance_uuid="5001", name="db02"))
    assert renamed.migration_id == "vm-5001"
