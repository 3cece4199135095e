"""Target-side preflight: every check a clear verdict, nothing created.

The checks answer what a migration engineer asks before a wave: does each
volume type and zone exist, is there quota for the volumes (per type too),
which flavor will the instance get, do the mapped networks exist, is every
source MAC free on its target network (a taken MAC is the most common late
failure of migrations), may this project set MACs there at all, and does each
fixed IP lie in its subnet, unused.

:func:`instance_checks` adds what only the instance step uses (key pair,
security groups, compute and port quota): the cutover runs it, with
:func:`preflight`, while the source still runs.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from ansible_collections.xms.warm_migration.plugins.module_utils.openstack.attach import connection_of
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack.errors import NotFoundError
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack.volumes import VolumeSpec


@dataclass
class Check:
    name: str
    ok: bool
    message: str
    parameter: Optional[str] = None


@dataclass
class NicTarget:
    """A source NIC and where it goes."""

    mac: str
    network: str
    subnet: Optional[str] = None
    fixed_ip: Optional[str] = None


def port_name(migration_id: str, mac: str) -> str:
    """Ports this tool creates are named after their migration, so a retry recognises its own."""
    return f"xms-{migration_id}-{mac.lower()}"


def best_flavor(flavors, vcpus: int, ram_mb: int):
    """The smallest flavor with at least ``vcpus`` and ``ram_mb``; ties broken by disk, then name."""
    fitting = [f for f in flavors if f.vcpus >= vcpus and f.ram >= ram_mb]
    if not fitting:
        return None
    return min(fitting, key=lambda f: (f.vcpus, f.ram, f.disk or 0, f.name))


def resolve_flavor(client, flavor: Optional[str], vcpus: int, ram_mb: int):
    """The flavor named (name or id), or the best match for the source's size; NotFoundError otherwise."""
    compute = client.conn.compute
    if flavor:
        found = compute.find_flavor(flavor, ignore_missing=True)
        if found is None:
            raise NotFoundError(
                f"flavor '{flavor}' does not exist",
                parameter="flavor",
                hint="List flavors with 'openstack flavor list', or leave flavor unset for the best match",
            )
        return found
    found = best_flavor(list(compute.flavors(details=True)), vcpus, ram_mb)
    if found is None:
        raise NotFoundError(
            f"no flavor has at least {vcpus} vCPUs and {ram_mb} MiB RAM",
            parameter="flavor",
            hint="Create a flavor that fits the source VM, or name one explicitly",
        )
    return found


def _quota_checks(client, volumes: List[VolumeSpec]) -> List[Check]:
    """Volume count and gigabytes, in total and per volume type where the cloud sets per-type quotas."""
    storage = client.conn.block_storage
    quota = storage.get_quota_set(client.conn.current_project_id, usage=True)
    limits = dict(quota.to_dict(computed=False))
    usage = quota.usage or {}
    reservation = quota.reservation or {}
    need: Dict[str, int] = {"volumes": len(volumes), "gigabytes": sum(v.size_gib for v in volumes)}
    for spec in volumes:
        vtype = spec.volume_type or ""
        if vtype:
            need[f"volumes_{vtype}"] = need.get(f"volumes_{vtype}", 0) + 1
            need[f"gigabytes_{vtype}"] = need.get(f"gigabytes_{vtype}", 0) + spec.size_gib
    extra = getattr(quota, "_body", None)
    body = dict(extra.attributes) if extra is not None else {}
    checks = []
    for key, wanted in need.items():
        limit = limits.get(key, body.get(key))
        if limit is None or int(limit) < 0:
            continue  # no such quota, or unlimited
        used = int(usage.get(key, 0)) + int(reservation.get(key, 0))
        checks.append(_limit_check(key, wanted, limit, used, parameter=None))
    return checks


def preflight(
    client,
    *,
    volumes: List[VolumeSpec],
    flavor: Optional[str],
    vcpus: int,
    ram_mb: int,
    availability_zone: Optional[str],
    nics: List[NicTarget],
    migration_id: str,
) -> List[Check]:
    """All target checks; none raises for a failed check (the caller decides), each names its parameter."""
    conn = client.conn
    checks: List[Check] = []
    for vtype in sorted({v.volume_type for v in volumes if v.volume_type}):
        found = conn.block_storage.find_type(vtype, ignore_missing=True)
        checks.append(
            Check(
                "volume_type",
                found is not None,
                f"volume type '{vtype}' " + ("exists" if found else "does not exist"),
                parameter=None if found else "volume_type",
            )
        )
    volume_zones = {z.name for z in conn.block_storage.availability_zones()}
    for zone in sorted({v.availability_zone for v in volumes if v.availability_zone}):
        checks.append(_zone_check("volume_availability_zone", "volume", zone, volume_zones))
    if availability_zone:
        compute_zones = {z.name for z in conn.compute.availability_zones()}
        checks.append(_zone_check("availability_zone", "compute", availability_zone, compute_zones))
    if volumes:
        checks.extend(_quota_checks(client, volumes))
    try:
        chosen = resolve_flavor(client, flavor, vcpus, ram_mb)
        small = chosen.vcpus < vcpus or chosen.ram < ram_mb
        checks.append(
            Check(
                "flavor",
                True,
                f"flavor '{chosen.name}' ({chosen.vcpus} vCPU, {chosen.ram} MiB)"
                + (" is smaller than the source" if small else ""),
            )
        )
    except NotFoundError as err:
        checks.append(Check("flavor", False, err.message, parameter="flavor"))
    for nic in nics:
        checks.extend(_nic_checks(client, nic, migration_id))
    return checks


def _zone_check(parameter: str, kind: str, zone: str, known: set) -> Check:
    ok = zone in known
    found = "exists" if ok else f"does not exist ({', '.join(sorted(known))})"
    return Check(parameter, ok, f"{kind} availability zone '{zone}' {found}", parameter=None if ok else parameter)


def _nic_checks(client, nic: NicTarget, migration_id: str) -> List[Check]:
    net = client.conn.network.find_network(nic.network, ignore_missing=True)
    if net is None:
        return [Check("network", False, f"network '{nic.network}' does not exist", parameter="network_map")]
    checks = [Check("network", True, f"network '{nic.network}' exists")]
    if nic.subnet:
        subnet = client.conn.network.find_subnet(nic.subnet, ignore_missing=True)
        ok = subnet is not None and subnet.network_id == net.id
        checks.append(
            Check(
                "subnet",
                ok,
                f"subnet '{nic.subnet}' " + ("is on" if ok else "is not on") + f" network '{nic.network}'",
                parameter=None if ok else "network_map",
            )
        )
    if net.project_id != client.conn.current_project_id and not _is_admin(client):
        checks.append(
            Check(
                "mac_allowed",
                False,
                f"network '{nic.network}' belongs to another project: Neutron lets only a network's owner (or an"
                f" admin) give a port the source MAC {nic.mac}",
                parameter="network_map",
            )
        )
    if nic.fixed_ip:
        checks.append(_fixed_ip_check(client, net, nic, migration_id))
    taken = [
        p
        for p in client.conn.network.ports(network_id=net.id, mac_address=nic.mac.lower())
        if p.name != port_name(migration_id, nic.mac)
    ]
    if taken:
        owner = taken[0].device_owner or "no device"
        checks.append(
            Check(
                "mac_free",
                False,
                f"MAC {nic.mac} is already used on network '{nic.network}' by port {taken[0].id} ({owner})",
                parameter="network_map",
            )
        )
    else:
        checks.append(Check("mac_free", True, f"MAC {nic.mac} is free on network '{nic.network}'"))
    return checks


def _fixed_ip_check(client, net, nic: NicTarget, migration_id: str) -> Check:
    """The fixed IP lies in the named subnet (or one of the network's) and no other port holds it."""
    network = client.conn.network
    subnets = (
        [network.find_subnet(nic.subnet, ignore_missing=True)]
        if nic.subnet
        else list(network.subnets(network_id=net.id))
    )
    try:
        address = ipaddress.ip_address(nic.fixed_ip)
    except ValueError:
        return Check("fixed_ip", False, f"fixed IP '{nic.fixed_ip}' is not an IP address", parameter="fixed_ips")
    inside = [sn for sn in subnets if sn is not None and address in ipaddress.ip_network(sn.cidr, strict=False)]
    if not inside:
        where = f"subnet '{nic.subnet}'" if nic.subnet else f"any subnet of network '{nic.network}'"
        return Check("fixed_ip", False, f"fixed IP {address} is not in {where}", parameter="fixed_ips")
    subnet = inside[0]
    cidr = ipaddress.ip_network(subnet.cidr, strict=False)
    reserved = {
        "the subnet's gateway address": subnet.gateway_ip,
        "the subnet's network address": str(cidr.network_address),
    }
    if cidr.version == 4 and cidr.prefixlen < 31:
        reserved["the subnet's broadcast address"] = str(cidr.broadcast_address)
    taken = [what for what, ip in reserved.items() if ip and ipaddress.ip_address(ip) == address]
    if taken:
        return Check("fixed_ip", False, f"fixed IP {address} is {taken[0]} ({cidr})", parameter="fixed_ips")
    holders = [
        p
        for p in network.ports(network_id=net.id, fixed_ips=f"ip_address={address}")
        if p.name != port_name(migration_id, nic.mac)
    ]
    if holders:
        return Check(
            "fixed_ip", False, f"fixed IP {address} is already used by port {holders[0].id}", parameter="fixed_ips"
        )
    return Check("fixed_ip", True, f"fixed IP {address} is free in subnet {inside[0].cidr}")


def _is_admin(client) -> bool:
    """Whether this token carries the admin role (Neutron's default policy lets admins set any MAC)."""
    session = client.conn.session
    try:
        return "admin" in (session.auth.get_access(session).role_names or [])
    except Exception:  # pylint: disable=broad-except  # an auth plugin that cannot say: assume not
        return False


def instance_checks(
    client,
    *,
    migration_id: str,
    flavor,
    nics: List[NicTarget],
    key_name: Optional[str],
    security_groups: Sequence[str],
    server_exists: bool,
) -> List[Check]:
    """What the instance step will use beyond :func:`preflight`: key pair, security groups, quota.

    ``flavor`` is the resolved flavor. Quota counts only what the instance step will still create:
    nothing for a server that exists (a rerun adopts it), ports only for NICs without theirs.
    """
    conn = client.conn
    checks: List[Check] = []
    if key_name:
        found = conn.compute.find_keypair(key_name, ignore_missing=True)
        verdict = "exists" if found else "does not exist"
        checks.append(Check("key_name", found is not None, f"key pair '{key_name}' {verdict}",
                            parameter=None if found else "key_name"))  # fmt: skip
    for group in security_groups:
        found = conn.network.find_security_group(group, ignore_missing=True)
        verdict = "exists" if found else "does not exist"
        checks.append(Check("security_group", found is not None, f"security group '{group}' {verdict}",
                            parameter=None if found else "security_groups"))  # fmt: skip
    project = conn.current_project_id
    if not server_exists:
        quota = conn.compute.get_quota_set(project, usage=True)
        usage = quota.usage or {}
        for key, wanted in (("instances", 1), ("cores", flavor.vcpus), ("ram", flavor.ram)):
            checks.append(_limit_check(key, wanted, getattr(quota, key, None), int(usage.get(key, 0))))
    new_ports = sum(1 for nic in nics if not list(conn.network.ports(name=port_name(migration_id, nic.mac))))
    if new_ports:
        checks.append(_ports_check(client, new_ports))
    return checks


def test_network_checks(client, *, network: str, subnet: Optional[str], ports: int) -> List[Check]:
    """A test migration's network: it exists, the subnet is on it, the project may create ``ports`` more and
    choose their MACs."""
    conn = client.conn
    net = conn.network.find_network(network, ignore_missing=True)
    if net is None:
        return [Check("test_network", False, f"network '{network}' does not exist", parameter="test_network")]
    checks = [Check("test_network", True, f"network '{network}' exists")]
    if subnet:
        found = conn.network.find_subnet(subnet, ignore_missing=True)
        ok = found is not None and found.network_id == net.id
        verdict = "is on" if ok else "is not on"
        checks.append(Check("test_subnet", ok, f"subnet '{subnet}' {verdict} network '{network}'",
                            parameter=None if ok else "test_subnet"))  # fmt: skip
    if ports:
        checks.append(_ports_check(client, ports))
        if net.project_id != conn.current_project_id and not _is_admin(client):
            checks.append(Check(
                "test_mac_allowed", False,
                f"network '{network}' belongs to another project: Neutron lets only a network's owner (or an admin)"
                " choose the MACs of the test ports, to which the conversion pins the guest's interface names",
                parameter="test_network",
            ))  # fmt: skip
    return checks


def _ports_check(client, wanted: int) -> Check:
    quota = client.conn.network.get_quota(client.conn.current_project_id, details=True).ports or {}
    used = int(quota.get("used", 0)) + int(quota.get("reserved", 0))
    return _limit_check("ports", wanted, quota.get("limit"), used)


def _limit_check(key: str, wanted: int, limit, used: int, parameter: Optional[str] = "cloud") -> Check:
    """``wanted`` more of quota ``key`` against ``limit`` with ``used`` taken; a failure names ``parameter``."""
    if limit is None or int(limit) < 0:
        return Check(f"quota_{key}", True, f"quota {key}: unlimited")
    free = int(limit) - used
    ok = wanted <= free
    message = f"quota {key}: need {wanted}, {free} free of {limit}" + ("" if ok else " - too little")
    return Check(f"quota_{key}", ok, message, parameter=None if ok else parameter)


def nova_attach_checks(client, volume_ids: List[str]) -> List[Check]:
    """Volumes Nova can attach without harm. A finding of the lab: Nova's libvirt driver (26.x, Zed) runs
    ``cryptsetup luksFormat`` at the first attach of an encrypted volume whose path is no LUKS device,
    which an encrypted volume of Cinder's NFS driver (a qcow2 file, LUKS inside) never is: the volume
    would be destroyed and the instance fail. Cinder's connection is asked of one encrypted volume
    per volume type (its back-end decides the format); the volumes must be available."""
    storage = client.conn.block_storage
    one_per_type: Dict[str, str] = {}
    for volume_id in volume_ids:
        volume = storage.get_volume(volume_id)
        if volume.is_encrypted:
            one_per_type.setdefault(volume.volume_type, volume_id)
    checks = []
    for volume_type, volume_id in one_per_type.items():
        info = connection_of(client, volume_id)
        if info.get("format") == "qcow2":
            checks.append(Check(
                "volume_type", False,
                f"volume {volume_id} (type {volume_type}) is encrypted inside a qcow2 file"
                f" ({info.get('driver_volume_type')} back-end): Nova's libvirt driver formats such a volume with"
                " cryptsetup when it first attaches it, which destroys it; migrate on an unencrypted volume type,"
                " or an encrypted one on a block back-end (iSCSI, RBD)",
                parameter="volume_type",
            ))  # fmt: skip
    return checks
