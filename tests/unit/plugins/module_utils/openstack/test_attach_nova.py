"""The Nova attach mode, with a fake cloud: the lab's conversion host is not an instance of the lab cloud.

FakeConn stands in for openstacksdk's connection; the device appears as a
symlink under a temporary /dev/disk/by-id, as udev would create it.
"""

import inspect
import os

import pytest

from ansible_collections.xms.warm_migration.plugins.module_utils.openstack import attach
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack.errors import AttachError

VOLUME = "5b8c1f7e-2d3a-4c55-9a0e-1234567890ab"


class FakeServer:
    id = "srv-1"
    name = "conv01"


class FakeVolume:
    def __init__(self, status):
        self.status = status


class FakeConn:
    """Records the calls; attaching makes the by-id link appear, detaching makes the volume available."""

    def __init__(self, by_id, device):
        self.by_id, self.device = by_id, device
        self.calls = []
        self.compute = self
        self.block_storage = self
        self.status = "available"

    def find_server(self, name, ignore_missing=True):
        return FakeServer() if name in ("conv01", "srv-1") else None

    def create_volume_attachment(self, server, volume=None):
        self.calls.append(("attach", server.name, volume))
        os.symlink(self.device, os.path.join(self.by_id, f"virtio-{volume[:20]}"))
        self.status = "in-use"

    def delete_volume_attachment(self, server, volume, ignore_missing=True):
        assert isinstance(server, FakeServer) and isinstance(volume, str), "openstacksdk's order: (server, volume)"
        self.calls.append(("detach", server.name, volume))
        self.status = "available"

    def get_volume(self, volume_id):
        return FakeVolume(self.status)


class FakeClient:
    def __init__(self, conn):
        self.conn = conn


@pytest.fixture
def fake(tmp_path, monkeypatch):
    by_id = tmp_path / "by-id"
    by_id.mkdir()
    device = tmp_path / "vdb"
    device.write_bytes(b"")

    def by_serial(volume_id):  # the same lookup, rooted in the temporary /dev/disk/by-id
        found = [p for p in os.listdir(by_id) if p == f"virtio-{volume_id[:20]}"]
        return os.path.realpath(by_id / found[0]) if found else None

    monkeypatch.setattr(attach, "_by_serial", by_serial)
    return FakeClient(FakeConn(str(by_id), str(device))), str(device)


def test_nova_mode_yields_the_device_by_serial_and_detaches(fake):
    client, device = fake
    with attach.attach_for_write(client, VOLUME, mode="nova", server_id="conv01") as path:
        assert path == device
    assert client.conn.calls == [("attach", "conv01", VOLUME), ("detach", "conv01", VOLUME)]


def test_nova_mode_detaches_when_the_copy_fails(fake):
    client, _device = fake
    with pytest.raises(RuntimeError), attach.attach_for_write(client, VOLUME, mode="nova", server_id="conv01"):
        raise RuntimeError("copy failed")
    assert client.conn.calls[-1] == ("detach", "conv01", VOLUME)


def test_nova_mode_needs_a_known_conversion_server(fake):
    client, _device = fake
    with pytest.raises(AttachError) as err, attach.attach_for_write(client, VOLUME, mode="nova", server_id="nope"):
        pass
    assert err.value.parameter == "conversion_server"
    with pytest.raises(AttachError) as err, attach.attach_for_write(client, VOLUME, mode="nova"):
        pass
    assert err.value.parameter == "conversion_server" and client.conn.calls == []


def test_by_serial_finds_virtio_and_scsi_names(tmp_path, monkeypatch):
    links = {f"virtio-{VOLUME[:20]}": "vdb", f"scsi-0QEMU_QEMU_HARDDISK_{VOLUME}": "sdb"}
    for name, target in links.items():
        os.symlink(f"/dev/{target}", tmp_path / name)
    real_glob = attach.glob.glob
    monkeypatch.setattr(
        attach.glob, "glob", lambda pattern: real_glob(pattern.replace("/dev/disk/by-id", str(tmp_path)))
    )
    assert attach._by_serial(VOLUME) == "/dev/vdb"
    os.unlink(tmp_path / f"virtio-{VOLUME[:20]}")
    assert attach._by_serial(VOLUME) == "/dev/sdb"


def test_the_fake_follows_the_real_sdk_signatures():
    """The fake is only worth its tests while it takes what openstacksdk's compute proxy takes."""
    from openstack.compute.v2._proxy import Proxy

    for name in ("delete_volume_attachment", "create_volume_attachment"):
        real = list(inspect.signature(getattr(Proxy, name)).parameters)[1:]
        fake = list(inspect.signature(getattr(FakeConn, name)).parameters)[1:]
        assert fake == real[: len(fake)], name
