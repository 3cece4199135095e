"""Fixtures for the OpenStack lab: clients per project, unique migration ids, cleanup of what tests create."""

import os
import uuid

import pytest
from lab_reset import delete_migration  # lab/demo (tests/functional/conftest.py)

from ansible_collections.xms.warm_migration.plugins.module_utils.openstack.client import OpenStackClient
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack.instance import find_server

TEST_PREFIX = "vm-test-"
CLOUDS = os.path.join(os.environ.get("XMS_LAB_DIR", "/var/lib/xms-lab"), "openstack", "clouds.yaml")


@pytest.fixture(scope="session", autouse=True)
def lab_clouds():
    if not os.path.exists(CLOUDS):
        pytest.fail(f"the OpenStack lab is not up ({CLOUDS} is missing): run lab/openstack/up.sh")
    os.environ["OS_CLIENT_CONFIG_FILE"] = CLOUDS
    return CLOUDS


@pytest.fixture(scope="session")
def lab():
    client = OpenStackClient.connect(cloud="xms-lab")
    remove_leftovers(OpenStackClient.connect(cloud="xms-admin"))
    return client


def remove_leftovers(admin):
    """What an earlier, crashed test run left in the lab: servers, ports and volumes of test migrations."""
    conn = admin.conn
    for server in conn.compute.servers(all_projects=True):
        if (server.metadata or {}).get("xms_migration_id", "").startswith(TEST_PREFIX):
            conn.compute.delete_server(server.id)
            conn.compute.wait_for_delete(server, wait=120)
    for port in conn.network.ports():
        if (port.name or "").startswith(f"xms-{TEST_PREFIX}") or port.name == "someone-else":
            conn.network.delete_port(port.id)
    for volume in conn.block_storage.volumes(all_projects=True):
        record_id = (volume.metadata or {}).get("xms_migration_id", "")
        if record_id.startswith(TEST_PREFIX) or volume.name in ("brickprobe", "probe"):
            if volume.status not in ("available", "error"):
                conn.block_storage.reset_volume_status(volume, status="available", attach_status="detached",
                                                       migration_status=None)  # fmt: skip
            for attachment in conn.block_storage.attachments(volume_id=volume.id):
                conn.block_storage.delete_attachment(attachment.id)
            conn.block_storage.delete_volume(volume.id, force=True)


@pytest.fixture(scope="session")
def small():
    return OpenStackClient.connect(cloud="xms-small")


@pytest.fixture
def migration(lab):
    """A fresh migration id; its server, ports and volumes are removed after the test."""
    migration_id = f"{TEST_PREFIX}{uuid.uuid4().hex[:12]}"
    yield migration_id
    server = find_server(lab, migration_id)
    if server is not None:
        lab.conn.compute.delete_server(server.id)
        lab.conn.compute.wait_for_delete(server, wait=120)
    for port in lab.conn.network.ports():
        if port.name and port.name.startswith(f"xms-{migration_id}-"):
            lab.conn.network.delete_port(port.id)
    delete_migration(lab, migration_id)  # releasing what a test killed part-way left attached
