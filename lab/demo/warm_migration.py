"""The demo: a real warm migration of a wave of lab VMs, through the collection's playbooks.

What an operator does, on the labs: the vSphere lab (vcsim + real QEMU disks
and dirty bitmaps) is the source, the OpenStack lab (Keystone, Cinder, Nova,
Neutron, Placement) the target. Writers keep changing the source disks, as
running guests do, while the wave is seeded and synced incrementally; they
stop when the cutover shuts the guests down. Then the metrics table is
printed and every volume is compared with its source disk byte for byte
(SHA-256 of the whole disk). A converted boot disk differs from its source by
design; there the boot check under QEMU and the instance answering at its
fixed IP in the cloud are the proof instead. (No VM of the wave is on the
encrypted volume type: the lab's Nova cannot boot an encrypted NFS volume,
and the cutover refuses one before the shutdown; docs/cutover.md.)

    python lab/demo/warm_migration.py [--wave lab-vm-1,lab-vm-2,lab-vm-linux] [--incrementals 2]

Every step is an ``ansible-playbook`` run of ``playbooks/*.yml`` with a
generated inventory; their output goes to ``<workdir>/<step>.log``.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
COLLECTIONS = os.path.join(ROOT, "tests", "output", "collection")
sys.path[:0] = [COLLECTIONS, HERE]
LAB_DIR = os.environ.get("XMS_LAB_DIR", "/var/lib/xms-lab")
CLOUDS = os.path.join(LAB_DIR, "openstack", "clouds.yaml")
CBT = os.path.join(ROOT, "lab", "vsphere", "cbt.py")
CINDER_MNT = "/var/lib/cinder/mnt"  # lab/openstack/up.sh: nfs_mount_point_base

import nbd  # noqa: E402
from lab_reset import reset_vm  # noqa: E402

from ansible_collections.xms.warm_migration.plugins.module_utils.migration import store  # noqa: E402
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.context import MigrationContext  # noqa: E402
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack.client import OpenStackClient  # noqa: E402
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere import inventory  # noqa: E402
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere.client import (  # noqa: E402
    VSphereClient,
    VSphereConnection,
)

GUEST_VMS = {"lab-vm-linux"}  # VMs with an operating system: converted and boot checked; the others hold test data


def log(message: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {message}", flush=True)


class Writers:
    """One thread per disk that keeps writing random blocks through the lab's live export."""

    def __init__(self, lab: dict, vms: list[str]):
        self.targets = []
        for name in vms:
            keys = sorted(lab["vms"][name]["disks"], key=int)
            if name in GUEST_VMS:
                keys = keys[1:]  # never scribble over a real guest's boot disk
            self.targets += [(name, key) for key in keys]
        self.stop_event = threading.Event()
        self.writes = 0
        self.threads = [threading.Thread(target=self._run, args=t, daemon=True) for t in self.targets]

    def _run(self, vm: str, key: str) -> None:
        while not self.stop_event.wait(0.5):
            subprocess.run([sys.executable, CBT, "write", vm, key, "2"], check=True, capture_output=True)
            self.writes += 2

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join()


def write_inventory(workdir: str, lab: dict, vms: list[str]) -> str:
    """The wave as an operator writes it; the vCenter password in a 0600 file the conversion host (this
    machine) holds, so it is never in a module's arguments (which Ansible writes to the host under async)."""
    hosts = {}
    for name in vms:
        hosts[name] = {"warm_migration_cadence": "hourly"}
        if name in GUEST_VMS:
            hosts[name].update(cutover_boot_check=True, cutover_conversion={"timeout": 1800})
        else:  # test data, no guest: nothing to convert, nothing that could answer in the cloud
            hosts[name].update(cutover_conversion={"skip": True}, cutover_validation={"enabled": False})
    password_file = os.path.join(workdir, "vcenter.password")
    fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(lab["password"] + "\n")
    vcenter = {"hostname": lab["hostname"], "port": lab["port"], "username": lab["username"],
               "password_file": password_file, "vcenter_validate_certs": False}  # fmt: skip
    inventory_doc = {
        "all": {
            "vars": {
                "warm_migration_vcenter": vcenter,
                "warm_migration_cloud": {"cloud": "xms-lab"},
                "warm_migration_data_path": {
                    "state_dir": os.path.join(workdir, "state"),
                    "vddk_libdir": os.path.join(LAB_DIR, "vsphere", "vddk"),
                },
                "ansible_connection": "local",
                "ansible_python_interpreter": sys.executable,
            },
            "children": {
                "vms": {
                    "vars": {
                        "warm_migration_volume_type": "standard-ssd",
                        "warm_migration_availability_zone": "az1",
                        "warm_migration_network_map": [{"source": "DC0_DVPG0", "network": "lab-net-a"}],
                    },
                    "children": {"wave1": {"hosts": hosts}},
                }
            },
        }
    }
    path = os.path.join(workdir, "inventory.json")
    with open(path, "w") as handle:
        json.dump(inventory_doc, handle, indent=1)
    return path


def playbook(workdir: str, inventory_path: str, name: str, step: str, *extra: str) -> float:
    """Run playbooks/<name>.yml on the wave; returns its duration. Output goes to <workdir>/<step>.log."""
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": COLLECTIONS, "OS_CLIENT_CONFIG_FILE": CLOUDS,
           "ANSIBLE_LOCALHOST_WARNING": "false", "ANSIBLE_HOST_KEY_CHECKING": "false"}  # fmt: skip
    book = os.path.join(ROOT, "playbooks", f"{name}.yml")
    argv = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", inventory_path,
            "-e", "wave=wave1", *extra, book]  # fmt: skip
    started = time.monotonic()
    with open(os.path.join(workdir, f"{step}.log"), "w") as out:
        rc = subprocess.run(argv, env=env, stdout=out, stderr=subprocess.STDOUT, check=False).returncode
    if rc != 0:
        with open(os.path.join(workdir, f"{step}.log")) as handle:
            sys.exit(f"{step} failed (playbook {name}.yml); the end of its log:\n{handle.read()[-4000:]}")
    return time.monotonic() - started


def sha256_of(read, size: int) -> str:
    digest = hashlib.sha256()
    for offset in range(0, size, 8 << 20):
        digest.update(read(min(8 << 20, size - offset), offset))
    return digest.hexdigest()


def volume_file(volume_id: str) -> str:
    """The volume's bytes on the lab's NFS backend: the instance holds the volume, so it cannot be attached here."""
    found = glob.glob(os.path.join(CINDER_MNT, "*", f"volume-{volume_id}"))
    if len(found) != 1:
        sys.exit(f"volume {volume_id} is not on the lab's NFS shares under {CINDER_MNT}")
    return found[0]


def compare(vsphere, openstack, vms: list[str]) -> bool:
    """Every volume against its source disk's final state (the guest is off: its live export is final)."""
    ok = True
    print(f"\n{'VM':<14} {'disk':<12} {'size':>9}  {'source sha256':<16} {'volume sha256':<16} result")
    for name in vms:
        vm = inventory.find_vm(vsphere, name=name)
        state = store.load(openstack, MigrationContext.read(vsphere, vm).migration_id)
        for index, disk in enumerate(state.disks):
            sock = os.path.join(LAB_DIR, "vsphere", "qsd", name, "nbd.sock")
            handle = nbd.NBD()
            handle.connect_uri(f"nbd+unix:///live-{disk.disk_key}?socket={sock}")
            want = sha256_of(handle.pread, disk.capacity)
            handle.shutdown()
            fd = os.open(volume_file(disk.volume_id), os.O_RDONLY)
            try:
                got = sha256_of(lambda n, o, fd=fd: os.pread(fd, n, o), disk.capacity)
            finally:
                os.close(fd)
            if name in GUEST_VMS and index == 0:
                converted = "converted for KVM (differs by design); boot check and validation passed"
                verdict = converted if state.converted else "NOT CONVERTED"
                ok &= state.converted
            else:
                verdict = "identical" if got == want else "DIFFERENT"
                ok &= got == want
            print(f"{name:<14} {disk.label:<12} {disk.capacity >> 20:>6} MiB  {want[:16]} {got[:16]} {verdict}")
    return ok


def print_metrics(openstack, vsphere, vms: list[str]) -> None:
    print(f"\n{'VM':<14} {'phase':<10} {'last sync':<20} {'lag s':>6} {'bytes full':>12} {'bytes incr':>12} "
          f"{'syncs':>5} {'rate MiB/s':>10} {'down s':>6}  {'instance':<36}  in the cloud")  # fmt: skip
    for name in vms:
        vm = inventory.find_vm(vsphere, name=name)
        m = store.load(openstack, MigrationContext.read(vsphere, vm).migration_id).metrics()
        lag = "-" if m["lag_seconds"] is None else f"{m['lag_seconds']:.0f}"
        down = "-" if m["downtime_seconds"] is None else m["downtime_seconds"]
        print(f"{name:<14} {m['phase']:<10} {(m['last_sync'] or '-')[:19]:<20} {lag:>6} {m['bytes_full']:>12} "
              f"{m['bytes_incr']:>12} {m['sync_count']:>5} {m['rate_bytes_per_second'] / 2**20:>10.1f} "
              f"{down:>6}  {m.get('instance_id') or '-':<36}  {m.get('validation') or '-'}")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--wave", default="lab-vm-1,lab-vm-2,lab-vm-linux", help="comma-separated lab VMs")
    parser.add_argument("--incrementals", type=int, default=2, help="incremental syncs while the writers run")
    args = parser.parse_args()
    vms = args.wave.split(",")
    with open(os.path.join(LAB_DIR, "vsphere", "lab.json")) as handle:
        lab = json.load(handle)
    os.environ["OS_CLIENT_CONFIG_FILE"] = CLOUDS
    openstack = OpenStackClient.connect(cloud="xms-lab")
    connection = VSphereConnection(hostname=lab["hostname"], port=lab["port"], username=lab["username"],
                                   password=lab["password"], validate_certs=False)  # fmt: skip
    workdir = tempfile.mkdtemp(prefix="xms-demo-")
    with VSphereClient.connect(connection) as vsphere:
        log(f"wave {', '.join(vms)}; logs and state in {workdir}")
        for name in vms:
            reset_vm(vsphere, inventory.find_vm(vsphere, name=name), openstack)
        inventory_path = write_inventory(workdir, lab, vms)

        log("preflight (check mode)")
        playbook(workdir, inventory_path, "preflight", "01-preflight")
        writers = Writers(lab, vms)
        writers.start()
        log(f"writers started on {len(writers.targets)} disks; seeding while they write")
        took = playbook(workdir, inventory_path, "seed", "02-seed")
        log(f"seeded in {took:.1f} s")
        for n in range(1, args.incrementals + 1):
            time.sleep(2)
            took = playbook(workdir, inventory_path, "sync", f"03-sync-{n}")
            log(f"incremental sync {n} in {took:.1f} s ({writers.writes} blocks written so far)")
        ready_report = os.path.join(workdir, "wave1-ready.html")
        playbook(workdir, inventory_path, "report", "03-report-ready", "-e", f"report_path={ready_report}")
        log(f"wave report while ready (lag, syncs, projected downtime): {ready_report}")
        writers.stop()  # a shut-down guest writes no more; the cutover shuts the VMs down first
        log(f"writers stopped after {writers.writes} blocks; cutover (shutdown, final delta, conversion, instance)")
        took = playbook(workdir, inventory_path, "cutover", "04-cutover")
        log(f"cut over in {took:.1f} s")
        report = os.path.join(workdir, "wave1-report.html")
        metrics = os.path.join(workdir, "wave1.prom")
        playbook(workdir, inventory_path, "report", "05-report", "-e", f"report_path={report}",
                 "-e", f"report_metrics_path={metrics}")  # fmt: skip
        print_metrics(openstack, vsphere, vms)
        ok = compare(vsphere, openstack, vms)
    log(f"HTML report: {report}; metrics for Prometheus: {metrics}")
    log("every volume matches its source" if ok else "MISMATCH: see above")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
