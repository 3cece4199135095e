"""The modules' shared vCenter options, through main(): bad input fails naming the parameter, before any
connection (connecting is replaced by a named mock that records the attempt)."""

import pytest

from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere import client as vs_client
from ansible_collections.xms.warm_migration.plugins.modules import block_sync, cutover, warm_migration_init

VM = {"hostname": "vcenter.example.com", "username": "migrator", "vm_name": "web01", "cloud": "xms-lab"}


@pytest.fixture
def connections(monkeypatch):
    """Mock of VSphereClient.connect: records the attempt and refuses (no vCenter here)."""
    made = []

    def connect(conn):
        made.append(conn)
        raise vs_client.VSphereError("no vCenter in unit tests")

    monkeypatch.setattr(vs_client.VSphereClient, "connect", staticmethod(connect))
    return made


@pytest.mark.parametrize("module", [block_sync, cutover, warm_migration_init], ids=lambda m: m.__name__.split(".")[-1])
def test_one_of_password_and_password_file_is_required_and_not_both(run_module, module, connections, tmp_path):
    neither = run_module(module, dict(VM))
    assert neither["failed"] and "password, password_file" in neither["msg"]
    both = run_module(module, {**VM, "password": "s3cret", "password_file": str(tmp_path / "p")})
    assert both["failed"] and "mutually exclusive" in both["msg"] and "s3cret" not in str(both)
    assert connections == []


def test_a_password_file_others_can_read_fails_naming_it_before_connecting(run_module, connections, tmp_path):
    path = tmp_path / "vcenter.password"
    path.write_text("s3cret\n")
    path.chmod(0o644)
    result = run_module(block_sync, {**VM, "password_file": str(path)})
    assert result["failed"] and result["parameter"] == "password_file" and "mode 644" in result["msg"]
    assert "s3cret" not in str(result) and connections == []
    path.chmod(0o600)
    result = run_module(block_sync, {**VM, "password_file": str(path)})
    assert connections and connections[0].password == "s3cret"  # read from the file, handed to the connection
    assert "s3cret" not in str(result)


@pytest.mark.parametrize("option", ["shutdown_timeout", "instance_timeout", "downtime_budget"])
def test_a_cutover_timeout_that_would_fail_after_the_shutdown_is_refused_before_connecting(
    run_module, connections, option
):
    result = run_module(cutover, {**VM, "password": "s3cret", option: 0})
    assert result["failed"] and result["parameter"] == option and "Nothing was changed" in result["msg"]
    assert connections == []
