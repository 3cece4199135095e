"""A test migration's network, checked before anything is cloned. Neutron's answers are a mock (named as
such): the lab's own project owns its networks, so a network of another project cannot be shown there."""

from types import SimpleNamespace

from ansible_collections.xms.warm_migration.plugins.module_utils.openstack import preflight


def client(network_project: str, roles=("member",)):
    """Mock of the SDK connection: one network, ports quota to spare, a token with ``roles``."""
    access = SimpleNamespace(role_names=list(roles))
    session = SimpleNamespace(auth=SimpleNamespace(get_access=lambda _session: access))
    network = SimpleNamespace(
        find_network=lambda name, ignore_missing: SimpleNamespace(id="net-1", project_id=network_project),
        get_quota=lambda project, details: SimpleNamespace(ports={"limit": 50, "used": 2, "reserved": 0}),
    )
    conn = SimpleNamespace(network=network, current_project_id="p-own", session=session)
    return SimpleNamespace(conn=conn)


def test_the_test_ports_macs_may_be_chosen_only_on_the_projects_own_network_or_as_admin():
    refused = [
        c for c in preflight.test_network_checks(client("p-other"), network="shared", subnet=None, ports=2) if not c.ok
    ]
    assert [(c.name, c.parameter) for c in refused] == [("test_mac_allowed", "test_network")]
    assert "belongs to another project" in refused[0].message
    assert all(c.ok for c in preflight.test_network_checks(client("p-own"), network="own", subnet=None, ports=2))
    assert all(
        c.ok
        for c in preflight.test_network_checks(client("p-other", ("admin",)), network="shared", subnet=None, ports=2)
    )
