"""What the tests and the demo expect in the lab cloud, created if missing.

- volume types, each on its own back-end kind: standard-ssd, performance-nvme, archive-hdd;
  standard-ssd-encrypted (ssd, LUKS with a key per volume in Barbican, as production's
  "Encrypted" type: Cinder's NFS driver then creates LUKS-encrypted qcow2 files);
  back-ends in zones az1 (ssd, nvme) and az2 (hdd, ssd);
- compute zones az1 (host compute1) and az2 (host compute2), as aggregates (``--zones``,
  after the hosts are discovered);
- flavors m1.small (1 vCPU, 2 GiB), m1.medium (2, 4 GiB), m1.large (4, 8 GiB);
- networks lab-net-a (10.10.1.0/24) and lab-net-b (10.10.2.0/24) of project xms-lab, flat provider
  networks on up.sh's bridges br-xms-a and br-xms-b, whose gateways (.1) are this host's addresses;
  lab-net-shared (10.10.9.0/24), the admin's, shared: visible to every project, but only its
  owner may give a port a chosen MAC; small-net (10.10.3.0/24) of project xms-small;
- project xms-small with tiny quotas: 2 volumes, 3 GiB, 1 GiB of archive-hdd, no instance;
  xms-lab with room for waves.
"""

import os
import sys
import time

import openstack

VOLUME_TYPES = {
    "standard-ssd": "ssd",
    "performance-nvme": "nvme",
    "archive-hdd": "hdd",
    "standard-ssd-encrypted": "ssd",
}
ENCRYPTION = {  # Nova's and Cinder's usual LUKS settings
    "standard-ssd-encrypted": {
        "provider": "luks", "cipher": "aes-xts-plain64", "key_size": 256, "control_location": "front-end"
    },
}  # fmt: skip
FLAVORS = {"m1.small": (1, 2048), "m1.medium": (2, 4096), "m1.large": (4, 8192)}
# Flat provider networks on the physical networks whose bridges up.sh makes (the host holds each gateway).
NETWORKS = {"lab-net-a": ("10.10.1.0/24", "lab-a"), "lab-net-b": ("10.10.2.0/24", "lab-b")}
ZONES = {"az1": "compute1", "az2": "compute2"}
BACKENDS = 4


def admin():
    return openstack.connect(
        auth_url="http://127.0.0.1:5000/v3", username="admin", password=os.environ["XMS_ADMIN_PW"],
        project_name="admin", user_domain_name="Default", project_domain_name="Default", region_name="RegionOne",
    )  # fmt: skip


def wait(what, check, timeout=300):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            sys.exit(f"lab: timed out waiting for {what}")
        time.sleep(2)


def volume_services_up(conn):
    services = conn.block_storage.get("/os-services").json()["services"]
    up = [s for s in services if s["binary"] == "cinder-volume" and s["state"] == "up"]
    return len(up) >= BACKENDS


def base(conn):
    wait("the cinder-volume back-ends", lambda: volume_services_up(conn))
    for name, kind in VOLUME_TYPES.items():
        if not conn.block_storage.find_type(name):
            conn.block_storage.create_type(name=name, extra_specs={"volume_backend_name": kind})
    for name, spec in ENCRYPTION.items():
        volume_type = conn.block_storage.find_type(name)
        if not conn.block_storage.get_type_encryption(volume_type).encryption_id:
            conn.block_storage.create_type_encryption(volume_type, **spec)
    for name, (vcpus, ram) in FLAVORS.items():
        if not conn.compute.find_flavor(name):
            conn.compute.create_flavor(name=name, vcpus=vcpus, ram=ram, disk=0)
    # Tenant networks of the migration project: Neutron lets a network's owner choose port MACs.
    owner = conn.identity.find_project("xms-lab").id
    for name, (cidr, physnet) in NETWORKS.items():
        net = conn.network.find_network(name)
        if net is not None and (net.project_id != owner or net.provider_physical_network != physnet):
            for port in conn.network.ports(network_id=net.id):
                conn.network.delete_port(port.id)
            conn.network.delete_network(net.id)
            net = None
        if net is None:
            net = conn.network.create_network(name=name, project_id=owner, provider_network_type="flat",
                                              provider_physical_network=physnet)  # fmt: skip
        if not conn.network.find_subnet(name + "-subnet"):
            conn.network.create_subnet(name=name + "-subnet", network_id=net.id, ip_version=4, cidr=cidr,
                                       project_id=owner)  # fmt: skip
    small = conn.identity.find_project("xms-small")
    network(conn, "small-net", "10.10.3.0/24", small.id)
    network(conn, "lab-net-shared", "10.10.9.0/24", conn.current_project_id, shared=True)
    conn.block_storage.update_quota_set(small.id, volumes=2, gigabytes=3, **{"gigabytes_archive-hdd": 1})
    conn.compute.update_quota_set(small.id, instances=0)
    conn.block_storage.update_quota_set(owner, volumes=200, gigabytes=5000, snapshots=100)


def network(conn, name, cidr, project_id, shared=False):
    net = conn.network.find_network(name) or conn.network.create_network(
        name=name, project_id=project_id, is_shared=shared
    )
    if not conn.network.find_subnet(name + "-subnet"):
        conn.network.create_subnet(name=name + "-subnet", network_id=net.id, ip_version=4, cidr=cidr,
                                   project_id=project_id)  # fmt: skip


def zones(conn):
    wait("both compute hosts", lambda: len(list(conn.compute.hypervisors())) >= len(ZONES))
    for zone, host in ZONES.items():
        agg = conn.compute.find_aggregate(zone) or conn.compute.create_aggregate(name=zone, availability_zone=zone)
        if host not in (agg.hosts or []):
            conn.compute.add_host_to_aggregate(agg, host)


if __name__ == "__main__":
    connection = admin()
    zones(connection) if "--zones" in sys.argv else base(connection)
