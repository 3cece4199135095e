"""Cutover in the target cloud: bootable volumes, ports with the source MACs, the instance.

A replica is protected: the instance is only created when every volume's
record says the migration is in ``cutover``. What this step creates (ports,
the server) is deleted again when it fails, and the volumes are left intact,
so the cutover can be retried. A retry adopts the ports and the server of its
own migration (by name and metadata), never those of someone else, and only
a server that holds every port of the migration: a create whose answer was
lost (a timeout after Nova accepted the POST) is found and adopted, and a
server left without its ports is replaced, never kept.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

from ansible_collections.xms.warm_migration.plugins.module_utils.common.waiter import WaitTimeout, wait_for
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack.errors import (
    InstanceError,
    MacInUseError,
    NotFoundError,
    ProtectedReplicaError,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack.preflight import port_name, resolve_flavor
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack.volumes import find_volumes

SERVER_TAG = "xms_migration_id"
TEST_TAG = "xms_test_of"  # a test migration's server, ports' names and cloned volumes: never the migration's own
POSTED_GRACE_S = 30.0  # how long a create whose answer was lost is looked for before it counts as not made


@dataclass
class NicSpec:
    mac: str
    network: str
    subnet: Optional[str] = None
    fixed_ip: Optional[str] = None


@dataclass
class ServerInfo:
    id: str
    name: str
    status: str
    flavor: str
    availability_zone: str
    ports: List[Dict[str, object]] = field(default_factory=list)
    volumes: List[str] = field(default_factory=list)

    def as_dict(self) -> Dict[str, object]:
        return asdict(self)


def find_server(client, migration_id: str):
    for server in client.conn.compute.servers(details=True):
        if (server.metadata or {}).get(SERVER_TAG) == migration_id:
            return server
    return None


def create_instance(
    client,
    migration_id: str,
    *,
    name: str,
    flavor: Optional[str],
    vcpus: int,
    ram_mb: int,
    volume_ids: List[str],
    nics: List[NicSpec],
    availability_zone: Optional[str] = None,
    key_name: Optional[str] = None,
    security_groups: List[str] = (),
    image_properties: Optional[Dict[str, str]] = None,
    timeout: float = 600,
) -> ServerInfo:
    """Boot the migration's instance from its volumes (boot disk first) and wait until it is ACTIVE."""
    _ensure_cutover(client, migration_id, volume_ids)
    existing = find_server(client, migration_id)
    if existing is not None and existing.status == "ACTIVE" and _holds_ports(client, existing, migration_id, nics):
        return _info(client, existing)
    if existing is not None:  # a failed earlier attempt, or one without its ports: start over from the volumes
        _delete_server(client, existing.id, timeout)
    return _boot(
        client,
        name=name,
        flavor=resolve_flavor(client, flavor, vcpus, ram_mb),
        volume_ids=volume_ids,
        ports=[lambda nic=nic: _port(client, migration_id, nic, security_groups) for nic in nics],
        tag={SERVER_TAG: migration_id},
        find=lambda: find_server(client, migration_id),
        availability_zone=availability_zone,
        key_name=key_name,
        image_properties=image_properties,
        timeout=timeout,
    )


def find_test_server(client, migration_id: str):
    for server in client.conn.compute.servers(details=True):
        if (server.metadata or {}).get(TEST_TAG) == migration_id:
            return server
    return None


def test_port_name(migration_id: str, index: int) -> str:
    return f"xms-test-{migration_id}-{index}"


def test_macs(migration_id: str, count: int) -> List[str]:
    """The MACs of a test migration's ports, in Neutron's default prefix and never the source's: fixed by
    the migration before anything exists, so the conversion pins the guest's interface names to them and
    the boot check sees the NICs the instance will have; the same on a rerun."""
    return [
        "fa:16:3e:" + ":".join(f"{b:02x}" for b in hashlib.sha256(f"{migration_id}/{i}".encode()).digest()[:3])
        for i in range(count)
    ]


def create_test_instance(
    client,
    migration_id: str,
    *,
    name: str,
    flavor,
    volume_ids: List[str],
    network: str,
    subnet: Optional[str],
    macs: List[str],
    availability_zone: Optional[str] = None,
    key_name: Optional[str] = None,
    security_groups: List[str] = (),
    image_properties: Optional[Dict[str, str]] = None,
    timeout: float = 600,
) -> ServerInfo:
    """Boot a test migration's server from the clones ``volume_ids``, one port per MAC of ``macs``
    (:func:`test_macs`) on ``network``.

    Never the source's MACs: the source (with its MACs) runs on, and its network may be reachable
    from the test network. Tagged TEST_TAG, so nothing that looks
    for the migration's own instance (cutover, rollback) ever finds it."""
    return _boot(
        client,
        name=name,
        flavor=flavor,
        volume_ids=volume_ids,
        ports=[
            lambda i=i, mac=mac: _test_port(client, migration_id, i, mac, network, subnet, security_groups)
            for i, mac in enumerate(macs)
        ],
        tag={TEST_TAG: migration_id},
        find=lambda: find_test_server(client, migration_id),
        availability_zone=availability_zone,
        key_name=key_name,
        image_properties=image_properties,
        timeout=timeout,
    )


def _test_port(
    client, migration_id: str, index: int, mac: str, network_name: str, subnet: Optional[str], security_groups
):
    network = client.conn.network
    net = network.find_network(network_name, ignore_missing=False)
    args = {"network_id": net.id, "name": test_port_name(migration_id, index), "mac_address": mac}
    if subnet:
        args["fixed_ips"] = [{"subnet_id": network.find_subnet(subnet, ignore_missing=False).id}]
    if security_groups:
        args["security_group_ids"] = [network.find_security_group(g, ignore_missing=False).id for g in security_groups]
    return network.create_port(**args), True


def delete_test_instance(client, migration_id: str, timeout: float = 600) -> List[str]:
    """Delete a test migration's server and ports; returns what was deleted (``server:<id>``, ``port:<id>``)."""
    deleted = []
    server = find_test_server(client, migration_id)
    if server is not None:
        _delete_server(client, server.id, timeout)
        deleted.append(f"server:{server.id}")
    prefix = test_port_name(migration_id, 0)[:-1]
    for port in client.conn.network.ports():
        if (port.name or "").startswith(prefix):
            client.conn.network.delete_port(port.id, ignore_missing=True)
            deleted.append(f"port:{port.id}")
    return deleted


def delete_instance(client, server_id: str, migration_id: str, macs: List[str], timeout: float = 600) -> None:
    """Delete the migration's instance and the ports the cutover made for it (the volumes stay)."""
    if server_id:
        _delete_server(client, server_id, timeout)
    for mac in macs:
        for port in client.conn.network.ports(mac_address=mac.lower()):
            if port.name == port_name(migration_id, mac):
                client.conn.network.delete_port(port.id, ignore_missing=True)


def _boot(
    client, *, name: str, flavor, volume_ids: List[str], ports: List[Callable[[], Tuple[object, bool]]],
    tag: Dict[str, str], find: Callable[[], object], availability_zone: Optional[str], key_name: Optional[str],
    image_properties: Optional[Dict[str, str]], timeout: float,
) -> ServerInfo:  # fmt: skip
    """Boot a server from ``volume_ids`` (boot disk first) with a port from each of ``ports``, tagged ``tag``.

    On failure, what this call created (ports, the server) is deleted and the boot volume is
    not bootable again; the volumes themselves are never touched."""
    conn = client.conn
    storage = conn.block_storage
    storage.set_volume_bootable_status(volume_ids[0], True)
    if image_properties:
        storage.set_volume_image_metadata(volume_ids[0], **image_properties)
    created_ports: List[str] = []
    server = None
    try:
        made = []
        for make in ports:
            port, created = make()
            made.append(port)
            if created:
                created_ports.append(port.id)
        mappings = [
            {"boot_index": index, "uuid": vid, "source_type": "volume", "destination_type": "volume",
             "delete_on_termination": False}
            for index, vid in enumerate(volume_ids)
        ]  # fmt: skip
        args = {
            "name": name,
            "flavor_id": flavor.id,
            "networks": [{"port": port.id} for port in made] or "none",
            "block_device_mapping_v2": mappings,
            "metadata": tag,
        }
        if availability_zone:
            args["availability_zone"] = availability_zone
        if key_name:
            args["key_name"] = key_name
        try:
            server = conn.compute.create_server(**args)
        except Exception as err:  # a lost answer may still have made the server: looked for before the error goes on
            server = _created_anyway(find, err)
            if server is None:
                raise
        server = wait_for(
            lambda: _active(client, server.id),
            timeout=timeout,
            what=f"instance {name} to become ACTIVE",
            hint="See nova-compute's log",
        )
        return _info(client, server)
    except Exception as err:  # any failure: what this call made is removed, then the error is typed
        if server is not None:
            _delete_server(client, server.id, timeout)
        for port_id in created_ports:
            conn.network.delete_port(port_id, ignore_missing=True)
        storage.set_volume_bootable_status(volume_ids[0], False)
        if isinstance(err, (InstanceError, MacInUseError, NotFoundError)):
            raise
        raise InstanceError(
            f"creating instance {name} failed: {getattr(err, 'details', None) or err}",
            hint="The volumes are intact; fix the cause and run again",
        ) from None


def _created_anyway(find: Callable[[], object], err: Exception):
    """The server of a create whose answer never came: Nova may have accepted the POST.

    A refusal (4xx) made nothing. Otherwise (a timeout, a dropped connection, a 5xx from a
    proxy) the migration's server is looked for until it shows up or the grace time ends.
    """
    status = getattr(err, "status_code", None)
    if status is not None and 400 <= status < 500:
        return None
    try:
        return wait_for(find, timeout=POSTED_GRACE_S, what="the posted server")
    except WaitTimeout:  # not there: the POST did not take; the caller raises the original error
        return None


def _holds_ports(client, server, migration_id: str, nics: List[NicSpec]) -> bool:
    """Whether every NIC's port of this migration is bound to ``server``."""
    bound = {p.name for p in client.conn.network.ports(device_id=server.id)}
    return all(port_name(migration_id, nic.mac) in bound for nic in nics)


def _ensure_cutover(client, migration_id: str, volume_ids: List[str]) -> None:
    records = {v.id: v.record for v in find_volumes(client, migration_id)}
    not_ready = [vid for vid in volume_ids if records.get(vid, {}).get("phase") != "cutover"]
    if not_ready:
        raise ProtectedReplicaError(
            f"the volumes of migration {migration_id} are protected replicas (phase is not 'cutover')",
            hint="Only the cutover module boots an instance from them",
        )


def _port(client, migration_id: str, nic: NicSpec, security_groups):
    """This NIC's port: ours from an earlier attempt, or a new one with the source MAC."""
    network = client.conn.network
    net = network.find_network(nic.network, ignore_missing=True)
    if net is None:
        raise NotFoundError(f"network '{nic.network}' does not exist", parameter="network_map")
    for port in network.ports(network_id=net.id, mac_address=nic.mac.lower()):
        if port.name == port_name(migration_id, nic.mac):
            return port, False
        raise MacInUseError(
            f"MAC {nic.mac} is already used on network '{nic.network}' by port {port.id}",
            parameter="network_map",
            hint="Free the address or map the NIC to another network",
        )
    args = {"network_id": net.id, "mac_address": nic.mac.lower(), "name": port_name(migration_id, nic.mac)}
    if nic.subnet or nic.fixed_ip:
        fixed = {}
        if nic.subnet:
            subnet = network.find_subnet(nic.subnet, ignore_missing=True)
            if subnet is None:
                raise NotFoundError(f"subnet '{nic.subnet}' does not exist", parameter="network_map")
            fixed["subnet_id"] = subnet.id
        if nic.fixed_ip:
            fixed["ip_address"] = nic.fixed_ip
        args["fixed_ips"] = [fixed]
    if security_groups:
        args["security_group_ids"] = [network.find_security_group(g, ignore_missing=False).id for g in security_groups]
    try:
        return network.create_port(**args), True
    except Exception as err:  # the port's refusal, typed here with its NIC (403: MACs may not be set by this project)
        if getattr(err, "status_code", None) == 403:
            raise InstanceError(
                f"not allowed to create a port with MAC {nic.mac} on network '{nic.network}'",
                parameter="network_map",
                hint="Neutron lets only the network's owner (or an admin) choose MACs and fixed IPs: use a "
                "network of the target project, or an account with that right",
            ) from None
        raise


def fixed_ips(client, server_id: str) -> List[str]:
    """The instance's fixed IPs, port by port (what the cutover's validation probes)."""
    return [f["ip_address"] for p in client.conn.network.ports(device_id=server_id) for f in p.fixed_ips or []]


def console_output(client, server_id: str) -> str:
    """Nova's console log of the instance so far (``os-getConsoleOutput``); empty for a guest that writes none."""
    return (client.conn.compute.get_server_console_output(server_id) or {}).get("output") or ""


def set_running(client, server_id: str, running: bool, timeout: float) -> None:
    """Start (or stop) the instance unless it already is ACTIVE (SHUTOFF), and wait until it is."""
    compute = client.conn.compute
    wanted = "ACTIVE" if running else "SHUTOFF"
    if compute.get_server(server_id).status != wanted:
        (compute.start_server if running else compute.stop_server)(server_id)
        wait_for(lambda: compute.get_server(server_id).status == wanted, timeout=timeout,
                 what=f"instance {server_id} to be {wanted}")  # fmt: skip


def _active(client, server_id: str):
    server = client.conn.compute.get_server(server_id)
    if server.status == "ERROR":
        fault = (server.fault or {}).get("message", "no fault message")
        raise InstanceError(
            f"instance {server.name} went to ERROR: {fault}",
            hint="The volumes are intact; fix the cause and run the cutover again",
        )
    return server if server.status == "ACTIVE" else None


def _delete_server(client, server_id: str, timeout: float) -> None:
    compute = client.conn.compute
    compute.delete_server(server_id, ignore_missing=True)
    wait_for(
        lambda: compute.find_server(server_id, ignore_missing=True) is None,
        timeout=timeout,
        what=f"instance {server_id} to be deleted",
    )


def _info(client, server) -> ServerInfo:
    ports = [
        {"id": p.id, "mac": p.mac_address, "network_id": p.network_id, "status": p.status,
         "fixed_ips": [f["ip_address"] for f in p.fixed_ips or []]}
        for p in client.conn.network.ports(device_id=server.id)
    ]  # fmt: skip
    volumes = [a.volume_id for a in client.conn.compute.volume_attachments(server)]
    return ServerInfo(
        id=server.id,
        name=server.name,
        status=server.status,
        flavor=(server.flavor or {}).get("original_name", ""),
        availability_zone=server.availability_zone or "",
        ports=ports,
        volumes=volumes,
    )
