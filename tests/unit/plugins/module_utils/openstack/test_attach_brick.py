"""The brick attach mode for what the lab's NFS back-ends never hand out.

iSCSI and RBD (this kernel has neither) run os-brick's real connector classes against the named
fakes of :mod:`storage_host_fakes` (open-iscsi and the kernel's SCSI layer; ceph-common and krbd):
the volume's device is what is yielded, and a detach leaves the host as it was; a host without
the initiator or the Ceph client is told which package, storage network or attach mode would help.
Cinder's attachment API is a mock (``FakeStorage``), as are os-brick connectors in the refusals:
an RBD connection that turns krbd off gives a Python file object, a format other than raw or
qcow2 cannot be written; both are refused before any write, the attachment always deleted again.
The host's connector (os-brick's import and its half a dozen probing commands) is asked once per
process, ahead of the first attach, and a warm-up that fails stays quiet for the attach to say why.
"""

import io
import os

import pytest
from storage_host_fakes import FakeCephClient, FakeHost, FakeIscsiInitiator

from ansible_collections.xms.warm_migration.plugins.module_utils.copy.errors import TargetError
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack import attach
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack.errors import AttachError

VOLUME = "0c7f4e2a-1b2c-4d3e-8f90-abcdefabcdef"


class FakeAttachment:
    id = "att-1"

    def __init__(self, info):
        self.connection_info = info


class FakeStorage:
    """Mock of Cinder's attachment API: records what was created and deleted."""

    def __init__(self, info):
        self.info, self.calls = info, []

    def get_volume(self, _volume_id):
        return type("Volume", (), {"status": "available", "attachments": []})()

    def create_attachment(self, volume_id, connector, mode):
        self.calls.append(("create", volume_id, mode))
        return FakeAttachment(self.info)

    def complete_attachment(self, attachment_id):
        self.calls.append(("complete", attachment_id))

    def delete_attachment(self, attachment_id):
        self.calls.append(("delete", attachment_id))


class FakeBrick:
    """Mock of an os-brick connector that hands out ``path``."""

    def __init__(self, path):
        self.path, self.disconnected = path, False

    def connect_volume(self, _info):
        return {"path": self.path}

    def disconnect_volume(self, _info, _device):
        self.disconnected = True


def fake_cloud(monkeypatch, info, path):
    storage = FakeStorage(info)
    brick = FakeBrick(path)
    connector = type("Connector", (), {
        "get_connector_properties": staticmethod(lambda *_args: {"host": "conv01"}),
        "InitiatorConnector": type("Factory", (), {"factory": staticmethod(lambda *_a, **_k: brick)}),
    })  # fmt: skip
    monkeypatch.setattr(attach, "_os_brick", lambda: connector)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    client = type("Client", (), {"conn": type("Conn", (), {"block_storage": storage})()})()
    return client, storage, brick


def test_a_file_object_from_os_brick_is_refused_naming_nova(monkeypatch):
    client, storage, brick = fake_cloud(
        monkeypatch, {"driver_volume_type": "rbd", "do_local_attach": False}, io.BytesIO()
    )
    with pytest.raises(AttachError) as err, attach.attach_for_write(client, VOLUME):
        pytest.fail("an RBD file object must not be yielded")
    assert err.value.parameter == "attach_mode" and "nova" in err.value.hint
    assert brick.disconnected and ("delete", "att-1") in storage.calls


def test_a_format_this_tool_cannot_write_is_refused_before_connecting(monkeypatch):
    client, storage, brick = fake_cloud(monkeypatch, {"driver_volume_type": "nfs", "format": "vhdx"}, "/dev/null")
    with pytest.raises(TargetError) as err, attach.attach_for_write(client, VOLUME):
        pytest.fail("a vhdx volume must not be yielded")
    assert "vhdx" in str(err.value) and "nova" in err.value.hint
    assert not brick.disconnected and storage.calls[-1] == ("delete", "att-1")


def test_the_hosts_connector_is_asked_once_however_many_volumes_attach(monkeypatch):
    client, storage, _brick = fake_cloud(monkeypatch, {"driver_volume_type": "nfs"}, "/dev/null")
    connector = attach._os_brick()
    asked = []
    connector.get_connector_properties = staticmethod(lambda *_args: asked.append(1) or {"host": "conv01"})
    attach.warm_up()
    for _volume in range(3):
        with attach.attach_for_write(client, VOLUME) as path:
            assert path == "/dev/null"
    assert len(asked) == 1 and [c[0] for c in storage.calls].count("create") == 3


def test_a_warm_up_without_os_brick_is_quiet_and_the_attach_says_what_is_missing(monkeypatch):
    def missing():
        raise AttachError("os-brick is not installed on the conversion host", parameter="attach_mode")

    monkeypatch.setattr(attach, "_os_brick", missing)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    attach.warm_up()
    with pytest.raises(AttachError, match="os-brick is not installed"), attach.attach_for_write(None, VOLUME):
        pytest.fail("nothing can be attached without os-brick")


ISCSI = {
    "driver_volume_type": "iscsi", "target_discovered": False, "target_portal": "192.0.2.10:3260",
    "target_iqn": f"iqn.2010-10.org.openstack:volume-{VOLUME}", "target_lun": 1, "volume_id": VOLUME,
    "auth_method": "CHAP", "auth_username": "chap-user", "auth_password": "chap-Secret-9", "encrypted": False,
    "access_mode": "rw",
}  # fmt: skip
RBD = {
    "driver_volume_type": "rbd", "name": f"volumes/volume-{VOLUME}", "hosts": ["192.0.2.20", "192.0.2.21"],
    "ports": ["6789", "6789"], "cluster_name": "ceph", "auth_enabled": True, "auth_username": "cinder",
    "secret_type": "ceph", "secret_uuid": "5b67401f-dc5e-496a-8456-9a8f3e8b2c14", "volume_id": VOLUME,
    "encrypted": False, "discard": True, "access_mode": "rw",
}  # fmt: skip


@pytest.fixture
def host(monkeypatch, tmp_path):
    """os-brick's real connectors over the fake host; Cinder's attachment API and this host's connector mocked."""
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(attach, "BRICK_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.setattr(attach, "_connector_properties", lambda _connector: {"host": "conv01", "ip": "192.0.2.5"})
    root = tmp_path / "host"
    root.mkdir()
    return FakeHost(root, monkeypatch)


def cloud(info):
    storage = FakeStorage(info)
    return type("Client", (), {"conn": type("Conn", (), {"block_storage": storage})()})(), storage


def test_an_iscsi_volume_is_written_at_its_lun_device_and_the_host_is_clean_after(host):
    initiator = FakeIscsiInitiator(host, luns={1: "6001405f3a5c2f0d7e4b4b1a9c8d7e6f"})
    client, storage = cloud(ISCSI)
    with attach.attach_for_write(client, VOLUME) as path:
        assert path == "/dev/sdz" and host.path(path).is_file()  # the LUN's block device, from a manual scan
        assert initiator.devices == {"sdz": (1, 1)}
        node = initiator.nodes[("192.0.2.10:3260", ISCSI["target_iqn"])]
        assert node["node.session.auth.username"] == "chap-user" and node["node.session.scan"] == "manual"
    assert storage.calls == [("create", VOLUME, "rw"), ("complete", "att-1"), ("delete", "att-1")]
    # Flushed, deleted through sysfs, logged out, the node record deleted: nothing left of the volume.
    assert ("blockdev", "--flushbufs", "/dev/sdz") in host.ran
    assert ("tee", "-a", "/sys/block/sdz/device/delete") in host.ran
    assert not initiator.sessions and not initiator.nodes and not initiator.devices
    assert not host.path("/dev/sdz").exists() and not list(host.path("/dev/disk/by-id").iterdir())
    assert host.unmodelled == []


def test_an_iscsi_attach_without_iscsid_names_the_initiator_and_leaves_nothing(host):
    initiator = FakeIscsiInitiator(host, iscsid_running=False, luns={1: "6001405f3a5c2f0d7e4b4b1a9c8d7e6f"})
    client, storage = cloud(ISCSI)
    with pytest.raises(AttachError) as err, attach.attach_for_write(client, VOLUME):
        pytest.fail("nothing is connected")
    assert f"os-brick could not connect volume {VOLUME} (iscsi)" in str(err.value)
    assert err.value.parameter == "attach_mode" and "open-iscsi" in err.value.hint and "iscsid" in err.value.hint
    assert "storage network" in err.value.hint and "attach_mode: nova" in err.value.hint
    assert "chap-Secret-9" not in str(err.value) + err.value.hint
    assert any("--login" in cmd for cmd in host.ran)  # the login was tried, and failed as iscsiadm does
    assert not initiator.sessions and not initiator.nodes  # os-brick's clean-up deleted the node record
    assert storage.calls[-1] == ("delete", "att-1") and ("complete", "att-1") not in storage.calls
    assert host.unmodelled == []


def test_an_rbd_volume_is_mapped_by_the_kernel_and_unmapped_after(host):
    ceph = FakeCephClient(host, images=[RBD["name"]])
    client, storage = cloud(RBD)
    with attach.attach_for_write(client, VOLUME) as path:
        assert path == f"/dev/rbd/{RBD['name']}" and os.path.realpath(path) == "/dev/rbd0"
    monitors = ["--id", "cinder", "--mon_host", "192.0.2.20:6789,192.0.2.21:6789"]
    assert ceph.args[0] == ("map", f"volume-{VOLUME}", "--pool", "volumes", *monitors)
    assert ceph.args[-1] == ("unmap", "/dev/rbd0", *monitors) and not ceph.mapped
    assert not host.path("/dev/rbd0").exists() and storage.calls[-1] == ("delete", "att-1")
    assert host.unmodelled == []


def test_an_rbd_attach_without_the_ceph_client_names_it(host):
    ceph = FakeCephClient(host, installed=False, images=[RBD["name"]])
    client, storage = cloud(RBD)
    with pytest.raises(AttachError) as err, attach.attach_for_write(client, VOLUME):
        pytest.fail("nothing is mapped")
    assert "ceph-common package is not installed" in str(err.value) and "ceph-common" in err.value.hint
    assert "monitors" in err.value.hint and "attach_mode: nova" in err.value.hint
    assert not ceph.args and storage.calls[-1] == ("delete", "att-1")


def test_a_protocol_without_a_known_need_only_names_the_nova_mode(monkeypatch):
    client, _storage, brick = fake_cloud(monkeypatch, {"driver_volume_type": "scaleio"}, "/dev/null")

    def refused(_info):
        raise OSError("no SDC on this host")

    brick.connect_volume = refused
    with pytest.raises(AttachError) as err, attach.attach_for_write(client, VOLUME):
        pytest.fail("nothing is connected")
    assert err.value.hint == f"Use {attach.NOVA}"
