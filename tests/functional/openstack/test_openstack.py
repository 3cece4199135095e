"""The OpenStack adapter against the real lab cloud (Keystone, Cinder, Nova, Neutron)."""

import hashlib
import os
import random
import signal
import socket
import subprocess
import sys

import pytest
from keystoneauth1.exceptions import ConnectFailure

from ansible_collections.xms.warm_migration.plugins.module_utils.openstack import volumes as os_volumes
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack.attach import (
    attach_all,
    attach_for_write,
    release_stale_attachments,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack.client import OpenStackClient
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack.errors import (
    AttachError,
    AuthenticationError,
    MacInUseError,
    OpenStackError,
    ProtectedReplicaError,
    QuotaError,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack.faults import OpenStackRefusedError
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack.instance import (
    SERVER_TAG,
    NicSpec,
    create_instance,
    find_server,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack.preflight import NicTarget, preflight
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack.volumes import VolumeSpec

GiB = 1 << 30


def specs(sizes_and_types):
    return [VolumeSpec(str(2000 + i), size, vtype, zone, f"t-disk{i}") for i, (size, vtype, zone) in
            enumerate(sizes_and_types)]  # fmt: skip


def random_mac(prefix):
    return prefix + "".join(f":{random.randrange(256):02x}" for _byte in range(3))


def disk_fields(spec_list):
    return {s.disk_key: {"disk_key": s.disk_key, "disk_index": s.disk_key[-1]} for s in spec_list}


def ensure(client, migration_id, spec_list, phase="initializing"):
    return os_volumes.ensure_volumes(client, migration_id, spec_list, {"phase": phase},
                                     disk_fields=disk_fields(spec_list))  # fmt: skip


def test_wrong_password_is_clear_and_never_echoed():
    secret = "Wr0ng-" + os.urandom(4).hex()
    auth = {"auth_url": "http://127.0.0.1:5000/v3", "username": "xms-lab-user", "password": secret,
            "project_name": "xms-lab", "user_domain_name": "Default", "project_domain_name": "Default"}  # fmt: skip
    with pytest.raises(AuthenticationError) as err:
        OpenStackClient.connect(auth=auth)
    assert "refused the credentials" in str(err.value) and err.value.parameter == "auth"
    assert secret not in str(err.value) and secret not in repr(err.value)


def test_an_unknown_cloud_name_is_clear():
    with pytest.raises(OpenStackError) as err:
        OpenStackClient.connect(cloud="no-such-cloud")
    assert err.value.parameter == "cloud"


def test_a_wrong_region_names_the_parameter(lab_clouds):
    """With a clouds.yaml entry and with a bare auth dict (whose regions nothing checks before the catalog)."""
    import yaml

    with open(lab_clouds) as handle:
        auth = yaml.safe_load(handle)["clouds"]["xms-lab"]["auth"]
    for kwargs in ({"cloud": "xms-lab"}, {"auth": auth}):
        with pytest.raises(OpenStackError) as err:
            OpenStackClient.connect(region_name="RegionTypo", **kwargs)
        assert err.value.parameter == "region_name", str(err.value)
        assert auth["password"] not in str(err.value)


def test_openstack_clouds_interface_and_api_timeout_reach_the_connection(lab_clouds):
    """openstack.cloud's conventions, with a clouds.yaml entry given inline as auth, auth_type and region_name."""
    import yaml

    with open(lab_clouds) as handle:
        entry = yaml.safe_load(handle)["clouds"]["xms-lab"]
    client = OpenStackClient.connect(auth=entry["auth"], auth_type="password", region_name=entry["region_name"],
                                     interface="public", api_timeout=30)  # fmt: skip
    assert client.conn.block_storage.get_endpoint().startswith("http://127.0.0.1")
    assert client.conn.config.config["api_timeout"] == 30 and client.conn.config.config["interface"] == "public"


def test_volumes_per_type_and_zone_carry_the_record_and_a_rerun_adopts_them(lab, migration):
    wanted = specs([(int(1.5 * GiB), "performance-nvme", "az1"), (10, "archive-hdd", "az2")])
    volumes, created = ensure(lab, migration, wanted)
    assert len(created) == 2
    by_key = {v.disk_key: v for v in volumes}
    assert by_key["2000"].size_bytes == 2 * GiB and by_key["2000"].volume_type == "performance-nvme"
    assert by_key["2001"].availability_zone == "az2" and by_key["2001"].size_bytes == GiB
    assert all(v.record["migration_id"] == migration and not v.bootable for v in volumes)
    again, created_again = ensure(lab, migration, wanted)
    assert created_again == [] and {v.id for v in again} == {v.id for v in volumes}
    os_volumes.update_record(lab, by_key["2000"].id, {"phase": "ready", "change_id": "52 a1/7"})
    record = {v.disk_key: v.record for v in os_volumes.find_volumes(lab, migration)}["2000"]
    assert record["phase"] == "ready" and record["change_id"] == "52 a1/7" and record["disk_key"] == "2000"


def test_preflight_names_every_bad_input(lab, migration):
    bad = specs([(GiB, "no-such-type", "az9")])
    nics = [NicTarget("00:50:56:01:02:03", "no-such-net"), NicTarget("00:50:56:01:02:04", "lab-net-a", "nope")]
    checks = preflight(lab, volumes=bad, flavor="m9.huge", vcpus=1, ram_mb=512, availability_zone="az7",
                       nics=nics, migration_id=migration)  # fmt: skip
    failed = {c.name: c for c in checks if not c.ok}
    assert failed["volume_type"].parameter == "volume_type" and "no-such-type" in failed["volume_type"].message
    assert failed["volume_availability_zone"].parameter == "volume_availability_zone"
    assert failed["availability_zone"].parameter == "availability_zone"
    assert failed["flavor"].parameter == "flavor" and "m9.huge" in failed["flavor"].message
    assert failed["network"].parameter == "network_map" and "no-such-net" in failed["network"].message
    assert failed["subnet"].parameter == "network_map"
    assert os_volumes.find_volumes(lab, migration) == []  # preflight creates nothing


def test_preflight_picks_the_smallest_flavor_that_fits(lab, migration):
    checks = preflight(lab, volumes=[], flavor=None, vcpus=2, ram_mb=3000, availability_zone=None, nics=[],
                       migration_id=migration)  # fmt: skip
    assert [c.message for c in checks if c.name == "flavor"] == ["flavor 'm1.medium' (2 vCPU, 4096 MiB)"]


def test_quota_too_small_is_refused_and_leaves_nothing(small):
    migration_id = "vm-test-quota"  # nothing may be created for it
    wanted = specs([(2 * GiB, "standard-ssd", "az1"), (2 * GiB, "archive-hdd", "az2")])
    checks = preflight(small, volumes=wanted, flavor=None, vcpus=1, ram_mb=512, availability_zone=None, nics=[],
                       migration_id=migration_id)  # fmt: skip
    failed = {c.name for c in checks if not c.ok}
    assert {"quota_gigabytes", "quota_gigabytes_archive-hdd"} <= failed
    before = len(list(small.conn.block_storage.volumes()))
    with pytest.raises(QuotaError) as err:
        ensure(small, migration_id, wanted)
    assert "quota" in str(err.value)
    assert len(list(small.conn.block_storage.volumes())) == before


def test_a_source_mac_already_used_on_the_target_network_fails_preflight(lab, migration):
    net = lab.conn.network.find_network("lab-net-a")
    mac = random_mac("fa:16:3e")
    squatter = lab.conn.network.create_port(network_id=net.id, mac_address=mac, name="someone-else")
    try:
        checks = preflight(lab, volumes=[], flavor="m1.small", vcpus=1, ram_mb=512, availability_zone=None,
                           nics=[NicTarget(mac, "lab-net-a")], migration_id=migration)  # fmt: skip
        mac_check = next(c for c in checks if c.name == "mac_free")
        assert not mac_check.ok and squatter.id in mac_check.message and mac_check.parameter == "network_map"
    finally:
        lab.conn.network.delete_port(squatter.id)


def test_brick_attach_writes_reach_the_volume(lab, migration):
    (volume,), _created = ensure(lab, migration, specs([(GiB, "standard-ssd", "az1")]))
    data = random.Random(1).randbytes(1 << 20)
    with attach_for_write(lab, volume.id) as path:
        with open(path, "r+b") as handle:
            handle.seek(5 << 20)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        assert lab.conn.block_storage.get_volume(volume.id).status == "in-use"
    assert lab.conn.block_storage.get_volume(volume.id).status == "available"
    with attach_for_write(lab, volume.id) as path, open(path, "rb") as handle:
        handle.seek(5 << 20)
        assert hashlib.sha256(handle.read(1 << 20)).digest() == hashlib.sha256(data).digest()


def test_a_failure_while_attached_still_detaches(lab, migration):
    (volume,), _created = ensure(lab, migration, specs([(GiB, "standard-ssd", "az1")]))
    with pytest.raises(RuntimeError), attach_for_write(lab, volume.id):
        raise RuntimeError("copy failed")
    assert lab.conn.block_storage.get_volume(volume.id).status == "available"


def test_volumes_attached_side_by_side_each_hold_their_own_writes(lab, migration):
    """A plain and an encrypted volume attached at once; the encrypted one's LUKS layer (a daemon that
    dies with the thread that started it) still serves after the attach returned, and each volume
    reads back its own bytes, decrypted with the cloud's key."""
    volumes, _created = ensure(
        lab, migration, specs([(GiB, "standard-ssd", "az1"), (GiB, "standard-ssd-encrypted", "az1")])
    )
    data = [random.Random(seed).randbytes(1 << 20) for seed in (2, 3)]
    with attach_all(lab, [v.id for v in volumes], as_file=True) as paths:
        assert len(set(paths)) == 2
        for path, chunk in zip(paths, data):
            with open(path, "r+b") as handle:
                handle.seek(3 << 20)
                handle.write(chunk)
                handle.flush()
                os.fsync(handle.fileno())
    for volume, chunk in zip(volumes, data):
        assert lab.conn.block_storage.get_volume(volume.id).status == "available"
        with attach_for_write(lab, volume.id, as_file=True) as path, open(path, "rb") as handle:
            handle.seek(3 << 20)
            assert handle.read(1 << 20) == chunk


def test_one_volume_refused_among_several_detaches_the_others(lab, migration):
    """Cinder refuses one volume of the set: the error names it, and the one that did attach is released."""
    (good, bad), _created = ensure(lab, migration, specs([(GiB, "standard-ssd", "az1"), (GiB, "standard-ssd", "az1")]))
    admin = OpenStackClient.connect(cloud="xms-admin").conn.block_storage
    admin.reset_volume_status(bad.id, status="error", attach_status=None, migration_status=None)
    try:
        with pytest.raises(AttachError) as err, attach_all(lab, [good.id, bad.id]):
            pytest.fail("attached a volume in error")
        assert bad.id in str(err.value)
        volume = lab.conn.block_storage.get_volume(good.id)
        assert volume.status == "available" and not volume.attachments
    finally:
        admin.reset_volume_status(bad.id, status="available", attach_status=None, migration_status=None)


HOLDER = """
import sys, time
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack.attach import attach_for_write
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack.client import OpenStackClient
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack.faults import OpenStackRefusedError
with attach_for_write(OpenStackClient.connect(cloud="xms-lab"), sys.argv[1]) as path:
    print(path, flush=True)
    time.sleep(600)
"""


def test_a_volume_a_killed_run_left_attached_is_refused_at_once_then_released_and_deleted(lab, migration):
    """Deleting an attached volume names the attachment at once (waiting would never end); released, it goes."""
    (volume,), _created = ensure(lab, migration, specs([(GiB, "standard-ssd", "az1")]))
    parent = sys.modules["ansible_collections"].__path__[0].rsplit("/ansible_collections", 1)[0]
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, volume.id], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": parent})  # fmt: skip
    try:
        assert holder.stdout.readline().strip(), "the holder did not attach"
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    attachment = lab.conn.block_storage.get_volume(volume.id).attachments[0]["attachment_id"]
    with pytest.raises(OpenStackError) as err:  # refused at once: a wait (WaitTimeout) would never end
        os_volumes.delete_volumes(lab, [volume.id])
    assert f"attachment {attachment} to " in str(err.value) and "volume attachment delete" in err.value.hint
    assert lab.conn.block_storage.get_volume(volume.id).status == "in-use"  # nothing was deleted

    assert release_stale_attachments(lab, volume.id, socket.gethostname()) == 1
    os_volumes.delete_volumes(lab, [volume.id])
    assert lab.conn.block_storage.find_volume(volume.id, ignore_missing=True) is None


def test_an_instance_is_refused_while_the_volumes_are_replicas(lab, migration):
    volumes, _created = ensure(lab, migration, specs([(GiB, "standard-ssd", "az1")]), phase="ready")
    with pytest.raises(ProtectedReplicaError):
        create_instance(lab, migration, name="t-refused", flavor="m1.small", vcpus=1, ram_mb=512,
                        volume_ids=[v.id for v in volumes], nics=[])  # fmt: skip
    assert find_server(lab, migration) is None
    assert not any(v.bootable for v in os_volumes.find_volumes(lab, migration))


def test_boot_from_volumes_with_source_macs_reaches_active_and_a_rerun_adopts_it(lab, migration):
    wanted = specs([(GiB, "standard-ssd", "az1"), (GiB, "performance-nvme", "az1")])
    volumes, _created = ensure(lab, migration, wanted, phase="cutover")
    ids = [v.id for v in sorted(volumes, key=lambda v: v.disk_key)]
    mac = random_mac("00:50:56")
    nics = [NicSpec(mac, "lab-net-a", fixed_ip=f"10.10.1.{random.randrange(50, 250)}")]
    server = create_instance(
        lab, migration, name="t-vm", flavor=None, vcpus=2, ram_mb=2048, volume_ids=ids, nics=nics,
        availability_zone="az1", image_properties={"hw_disk_bus": "virtio"},
    )  # fmt: skip
    assert server.status == "ACTIVE" and server.availability_zone == "az1" and server.flavor == "m1.medium"
    assert [p["mac"] for p in server.ports] == [mac] and server.ports[0]["fixed_ips"] == [nics[0].fixed_ip]
    assert sorted(server.volumes) == sorted(ids)
    assert lab.conn.block_storage.get_volume(ids[0]).is_bootable in (True, "true")
    again = create_instance(lab, migration, name="t-vm", flavor=None, vcpus=2, ram_mb=2048, volume_ids=ids,
                            nics=nics, availability_zone="az1")  # fmt: skip
    assert again.id == server.id


def test_a_failed_creation_removes_its_ports_and_keeps_the_volumes(lab, migration):
    volumes, _created = ensure(lab, migration, specs([(GiB, "standard-ssd", "az1")]), phase="cutover")
    net = lab.conn.network.find_network("lab-net-b")
    taken = random_mac("fa:16:3e")
    squatter = lab.conn.network.create_port(network_id=net.id, mac_address=taken, name="someone-else")
    free = random_mac("00:50:56")
    try:
        with pytest.raises(MacInUseError):
            create_instance(
                lab, migration, name="t-fail", flavor="m1.small", vcpus=1, ram_mb=512, volume_ids=[volumes[0].id],
                nics=[NicSpec(free, "lab-net-a"), NicSpec(taken, "lab-net-b")],
            )  # fmt: skip
        assert find_server(lab, migration) is None
        assert not [p for p in lab.conn.network.ports() if p.mac_address == free]
        assert lab.conn.block_storage.get_volume(volumes[0].id).status == "available"
    finally:
        lab.conn.network.delete_port(squatter.id)


def test_a_failed_volume_creation_deletes_what_it_created(lab, migration):
    wanted = specs([(GiB, "standard-ssd", "az1"), (GiB, "no-such-type", "az1")])
    with pytest.raises(OpenStackError) as err:
        ensure(lab, migration, wanted)
    assert "no-such-type" in str(err.value) and "Nothing was left behind" in str(err.value)
    assert os_volumes.find_volumes(lab, migration) == []


def test_a_create_whose_answer_was_lost_is_adopted_with_its_ports(lab, migration, monkeypatch):
    """Nova accepts the POST but the answer never arrives: the server is found, awaited and kept."""
    volumes, _created = ensure(lab, migration, specs([(GiB, "standard-ssd", "az1")]), phase="cutover")
    real = lab.conn.compute.create_server

    def answer_lost(**args):
        """Mock of a response lost after Nova accepted the request (the lab's network never drops one)."""
        real(**args)
        raise ConnectFailure("Unable to establish connection: read timed out")

    monkeypatch.setattr(lab.conn.compute, "create_server", answer_lost)
    mac = random_mac("00:50:56")
    server = create_instance(lab, migration, name="t-lost", flavor="m1.small", vcpus=1, ram_mb=512,
                             volume_ids=[volumes[0].id], nics=[NicSpec(mac, "lab-net-a")])  # fmt: skip
    assert server.status == "ACTIVE" and [p["mac"] for p in server.ports] == [mac]
    assert [s.id for s in lab.conn.compute.servers() if s.name == "t-lost"] == [server.id]


def test_a_server_left_without_its_ports_is_replaced_on_the_rerun(lab, migration):
    volumes, _created = ensure(lab, migration, specs([(GiB, "standard-ssd", "az1")]), phase="cutover")
    flavor = lab.conn.compute.find_flavor("m1.small")
    lab.conn.block_storage.set_volume_bootable_status(volumes[0].id, True)  # as an earlier attempt left it
    orphan = lab.conn.compute.create_server(
        name="t-portless", flavor_id=flavor.id, networks="none", metadata={SERVER_TAG: migration},
        block_device_mapping_v2=[{"boot_index": 0, "uuid": volumes[0].id, "source_type": "volume",
                                  "destination_type": "volume", "delete_on_termination": False}],
    )  # fmt: skip
    lab.conn.compute.wait_for_server(orphan, wait=300)
    mac = random_mac("00:50:56")
    server = create_instance(lab, migration, name="t-portless", flavor="m1.small", vcpus=1, ram_mb=512,
                             volume_ids=[volumes[0].id], nics=[NicSpec(mac, "lab-net-a")])  # fmt: skip
    assert server.id != orphan.id and [p["mac"] for p in server.ports] == [mac]
    assert lab.conn.compute.find_server(orphan.id, ignore_missing=True) is None


def test_the_labs_cinder_refuses_a_record_value_over_255_characters_as_real_cinder_does(lab, migration):
    """The limit every record encoder keeps (record.py, projection.py) is real: Cinder refuses the write whole,
    and the translated fault names the call; nothing of it lands."""
    volumes, _created = ensure(lab, migration, specs([(GiB, "standard-ssd", "az1")]))
    volume_id = volumes[0].id
    os_volumes.update_record(lab, volume_id, {"history": "x" * 255})
    with pytest.raises(OpenStackRefusedError) as err:
        os_volumes.update_record(lab, volume_id, {"history": "y" * 256, "phase": "ready"})
    assert "set_volume_metadata" in str(err.value) and "HTTP 400" in str(err.value)
    record = os_volumes.find_volumes(lab, migration)[0].record
    assert record["history"] == "x" * 255 and record.get("phase") != "ready"
