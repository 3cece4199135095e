"""The brick attach mode's refusals for what the lab's NFS back-ends never hand out (mocks, named as such).

An RBD volume without krbd comes back from os-brick as a Python file object, a format other than raw
or qcow2 cannot be written: both are refused after the attachment and before any write, and the
attachment is always deleted again. The host's connector (os-brick's import and its half a dozen
probing commands) is asked once per process, ahead of the first attach, and a warm-up that fails
stays quiet for the attach to say why.
"""

import io
import os

import pytest

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
    client, storage, brick = fake_cloud(monkeypatch, {"driver_volume_type": "rbd"}, io.BytesIO())
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


def test_a_connect_that_fails_says_what_the_host_needs_for_the_protocol(monkeypatch):
    """Mock of os-brick's iSCSI connector failing as it does without an initiator (this kernel has no iSCSI)."""
    client, storage, brick = fake_cloud(monkeypatch, {"driver_volume_type": "iscsi", "format": "raw"}, "/dev/sdz")

    def no_initiator(_info):
        raise OSError("iscsiadm: No such file or directory")

    brick.connect_volume = no_initiator
    with pytest.raises(AttachError) as err, attach.attach_for_write(client, VOLUME):
        pytest.fail("nothing is connected")
    assert "iscsiadm" in str(err.value) and err.value.parameter == "attach_mode"
    assert "open-iscsi" in err.value.hint and "attach_mode: nova" in err.value.hint
    assert storage.calls[-1] == ("delete", "att-1")
