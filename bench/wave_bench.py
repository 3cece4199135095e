"""A wave at scale, on the labs: four VMs x two 2 GiB disks of random data, seeded and synced through
the collection's playbooks on two conversion hosts reached over SSH, against nbdcopy copying the
same eight disks in parallel in the same run.

The conversion hosts are the functional tests' network namespaces (each with its own sshd,
hostname and state_dir: tests/functional/migration/conversion_hosts.py); the conversion_host
filter puts two VMs on each. The disks of lab-vm-bench-1..4 are filled from ``nbdkit random``
through the lab's live exports first (as a running guest's writes land), then:

- yardstick: eight ``nbdcopy --flush`` at once, each disk from its live export into a file, just
  before the first wave and again after each wave;
- the wave, three times (the VMs' migrations removed in between): ``ansible-playbook
  xms.warm_migration.seed`` (init and seed of all four VMs), with every process of each conversion
  host's namespace sampled for its summed RSS;
- the idle incremental: ``sync`` on the first seeded wave, and the module time of one idle
  ``block_sync`` run as Ansible runs it (a Python process with its arguments on stdin).

    XMS_LAB_DIR=/var/lib/xms-lab .venv/bin/python bench/wave_bench.py

Prints one JSON object. ``ratio`` is the wave's aggregate seed throughput over nbdcopy's (goal
>= 0.8): the bytes of all eight seeds over the window in which they copied, from the first
disk's first byte to the last disk's last byte on either host (each copy reports its start on
the wall clock), against nbdcopy's eight copies of the same bytes; that compares data paths, as
nbdcopy has no snapshot to take and no volume to attach. This machine's speed drifts within
minutes (its disk and cores are shared: the same eight nbdcopy took 17 s and 25 s in one hour,
and a wave once found the disk slow enough to leave a third of the cores idle), so the wave is
compared with the mean of the yardsticks before and after it; both are printed
(``nbdcopy_before_after_s`` per round in ``rounds``); ``ratio`` is the median of the three waves'
(``ratio_min_max`` beside it), as one wave's figure moved by a fifth between runs minutes apart.
``ratio_while_copying`` counts only the seconds in which some disk
was copying (``copying_s``): the window's gaps are VMs still waiting on their control plane
(Ansible's dispatch, Cinder's attachments) while no byte moved.
``end_to_end_ratio`` counts the seeds from the first snapshot asked for to the last seed's end
instead: the control plane's fixed cost per VM (snapshot, Cinder attachments) is in it. The disks
are 2 GiB (the issue asks for at least 512 MiB): with 512 MiB ones each copy lasted about as long
as the lab's Cinder takes to attach eight volumes through its four API threads, and the window
measured which VM Cinder served last rather than the data path;
per VM of the median wave (``median_round_per_vm``), its snapshot's lifetime next to its largest
disk's copy time (goal: close); per round, ``first_byte_spread_s`` from the first VM's first byte
to the last VM's;
``idle_incremental_module_s`` (goal <= 3 s on the lab); ``peak_rss_mib`` per conversion host, and
``memory_per_copying_vm``: each host's peak PSS per copying VM, by kind of process, against
``BOUND_MIB_PER_VM``.
The yardstick reads each disk's live export, the wave a snapshot of it read through nbdkit, the
collection's VDDK reader and the lab's VDDK (lab/vsphere/vddk): the same bytes from the same images.
"""

import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from checkout import COLLECTIONS, ROOT

sys.path[:0] = [os.path.join(ROOT, "lab", "demo"), os.path.join(ROOT, "tests", "functional", "migration")]
LAB = os.environ.get("XMS_LAB_DIR", "/var/lib/xms-lab")
VMS = [f"lab-vm-bench-{i}" for i in range(1, 5)]
HOSTS = ["conv-a", "conv-b"]
# A copying VM's memory on its conversion host, bounded by construction: 160 MiB whatever its disks
# (its module's Python with pyVmomi and openstacksdk and Ansible's async wrapper, 110 MiB measured;
# here also the lab's qemu-nbd and relays, 22 MiB), plus per disk copying at once (at most the data
# path's parallel_disks) the engine's buffer pool (64 reads of 512 KiB: 32 MiB) and its nbdkit with
# the VDDK reader (about 16 MiB). These VMs copy two disks.
BOUND_MIB_PER_VM = 160 + 2 * (32 + 16)
MiB = 1 << 20
DISK = 2048 * MiB  # as lab/vsphere/populate.py makes them
WAVES = 3  # the machine's speed drifts within minutes: the median of three waves, each between two yardsticks
CLOUDS = os.path.join(LAB, "openstack", "clouds.yaml")
VDDK_LIBDIR = os.path.join(LAB, "vsphere", "vddk")  # the lab's VDDK (lab/vsphere/vddk)
BIN = os.path.dirname(sys.executable)
from ansible_output import task_results  # noqa: E402
from conversion_hosts import ConversionHosts  # noqa: E402
from lab_reset import reset_vm  # noqa: E402

from ansible_collections.xms.warm_migration.plugins.module_utils.migration import store  # noqa: E402
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.context import MigrationContext  # noqa: E402
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack.client import (  # noqa: E402
    OpenStackClient,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere import cbt, datapath, inventory  # noqa: E402
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere.client import (  # noqa: E402
    VSphereClient,
    VSphereConnection,
)


def live_uri(lab, vm, key):
    return f"nbd+unix:///live-{key}?socket={LAB}/vsphere/qsd/{vm}/nbd.sock"


def run_all(argvs):
    """Start every argv at once, wait for all; seconds from the first start to the last end."""
    started = time.monotonic()
    procs = [subprocess.Popen(a, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for a in argvs]
    for proc in procs:
        if proc.wait() != 0:
            raise SystemExit(f"{proc.args} failed: {proc.stderr.read().decode()[-500:]}")
    return time.monotonic() - started


def fill(lab):
    """Random data over every byte of every bench disk, through the lab's live exports."""
    argvs = [["nbdkit", "-U", "-", "random", f"size={DISK}", f"seed={vm[-1]}{key}", "--run",
              f"nbdcopy --flush \"$uri\" '{live_uri(lab, vm, key)}'"]
             for vm in VMS for key in lab["vms"][vm]["disks"]]  # fmt: skip
    return run_all(argvs)


def yardstick(lab, work):
    targets = []
    argvs = []
    for vm in VMS:
        for key in lab["vms"][vm]["disks"]:
            target = os.path.join(work, f"{vm}-{key}.img")
            with open(target, "wb") as handle:
                handle.truncate(DISK)
            targets.append(target)
            argvs.append(["nbdcopy", "--flush", live_uri(lab, vm, key), target])
    seconds = run_all(argvs)
    for target in targets:
        os.unlink(target)
    return seconds


def yardstick_via_snapshots(vsphere, vms, work):
    """The same eight nbdcopy at once, but reading what the wave reads: each VM's snapshot served by
    nbdkit with the collection's reader over the lab's VDDK (which reads qemu-nbd's view of the snapshot), opened by the
    adapter's own ``open_disk``. Only the copies are timed; snapshots and servers are up before."""
    targets, argvs = [], []
    with contextlib.ExitStack() as stack:
        for name, vm in vms.items():
            view = stack.enter_context(cbt.sync_snapshot(vsphere, vm, purpose="wave bench yardstick"))
            for disk in inventory.inventory(vsphere, vm).disks:
                uri = stack.enter_context(datapath.open_disk(vsphere, vm, view, disk, vddk_libdir=VDDK_LIBDIR))
                target = os.path.join(work, f"{name}-{disk.key}.img")
                with open(target, "wb") as handle:
                    handle.truncate(DISK)
                targets.append(target)
                argvs.append(["nbdcopy", "--flush", uri, target])
        seconds = run_all(argvs)
    for target in targets:
        os.unlink(target)
    return seconds


class RssSampler:
    """The summed memory of every process in each conversion host's network namespace, sampled; its peak.

    RSS, as before, and PSS (``smaps_rollup``), which shares each shared page among the processes
    mapping it, so that a sum over many Python processes does not count their libraries many times.
    At the PSS peak, the share of each kind of process (``KINDS``) is kept. In this process, as ``ip
    netns pids`` finds them (a process's ``ns/net`` is the namespace's file): starting ``ip`` eight
    times a second cost the machine the wave runs on."""

    def __init__(self, hosts):
        self.hosts, self.peak = hosts, {h.name: 0 for h in hosts}
        self.peak_pss = {h.name: 0 for h in hosts}
        self.pss_by_kind = {h.name: {} for h in hosts}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        namespaces = {_ns_id(f"/run/netns/{host.namespace}"): host.name for host in self.hosts}
        while not self.stop.wait(0.25):
            totals = dict.fromkeys(self.peak, 0)
            pss = {host: {} for host in self.peak}
            for pid in filter(str.isdigit, os.listdir("/proc")):
                host = namespaces.get(_ns_id(f"/proc/{pid}/ns/net"))
                if host:
                    totals[host] += _proc_kib(pid, "status", "VmRSS:")
                    kind = _kind(pid)
                    pss[host][kind] = pss[host].get(kind, 0) + _proc_kib(pid, "smaps_rollup", "Pss:")
            for host, total in totals.items():
                self.peak[host] = max(self.peak[host], total)
                if sum(pss[host].values()) > self.peak_pss[host]:
                    self.peak_pss[host], self.pss_by_kind[host] = sum(pss[host].values()), pss[host]

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *_exc):
        self.stop.set()
        self.thread.join()


KINDS = {
    "nbdkit": "nbdkit: one per disk copying (the collection's VDDK reader and, inside it, the lab's VDDK)",
    "module": "Python: the modules (block_sync, and wait_progress's async_status) and Ansible's async wrappers",
    "ssh": "sshd and the shells Ansible starts",
    "qemu-nbd": "the lab's VDDK serves each snapshot with qemu-nbd: ESXi's side, counted as it runs in the namespace",
    "socat": "the lab's relays into the namespace",
}  # any other process is named by its program


def _kind(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            argv = handle.read().split(b"\0")
    except OSError:
        return "gone"
    program = os.path.basename(argv[0]).decode(errors="replace")
    if program.startswith("nbdkit"):
        return "nbdkit"
    if program.startswith("python"):
        return "module"
    if program.startswith(("sshd", "sh", "bash")):
        return "ssh"
    return program


def _ns_id(path):
    try:
        found = os.stat(path)
    except OSError:  # the process has ended
        return None
    return found.st_dev, found.st_ino


def _proc_kib(pid, name, field):
    """A figure in KiB from ``/proc/<pid>/<name>`` (``VmRSS:`` of ``status``, ``Pss:`` of ``smaps_rollup``)."""
    try:
        with open(f"/proc/{pid}/{name}") as handle:
            return next((int(line.split()[1]) for line in handle if line.startswith(field)), 0)
    except OSError:  # the process has ended
        return 0


def results_with(output, key):
    """Per inventory host, the task results of a ``-v`` run that carry ``key``."""
    return {host: result for host, result in task_results(output) if key in result}


def idle_module_s(lab, work):
    """One idle block_sync as Ansible runs a module: a fresh Python, its arguments on stdin."""
    args = {"ANSIBLE_MODULE_ARGS": {
        "hostname": lab["hostname"], "port": lab["port"], "username": lab["username"], "password": lab["password"],
        "vcenter_validate_certs": False, "cloud": "xms-lab", "vm_name": VMS[0], "vddk_libdir": VDDK_LIBDIR,
        "state_dir": os.path.join(work, "module-state"),
    }}  # fmt: skip
    env = {**os.environ, "PYTHONPATH": COLLECTIONS, "OS_CLIENT_CONFIG_FILE": CLOUDS}
    times = []
    for _round in range(3):
        started = time.monotonic()
        done = subprocess.run([sys.executable, os.path.join(ROOT, "plugins", "modules", "block_sync.py")],
                              input=json.dumps(args), capture_output=True, text=True, env=env, check=False)  # fmt: skip
        times.append(time.monotonic() - started)
        result = json.loads(done.stdout)
        if result.get("failed") or result.get("changed") or result.get("kind") != "incremental":
            raise SystemExit(f"the idle block_sync did not run as an idle incremental: {done.stdout[-1000:]}")
    return statistics.median(times)


def main():
    with open(os.path.join(LAB, "vsphere", "lab.json")) as handle:
        lab = json.load(handle)
    sizes = {d["capacity"] for vm in VMS for d in lab["vms"][vm]["disks"].values()}
    if sizes != {DISK}:
        raise SystemExit(f"the lab's bench disks hold {sizes} bytes, this bench wants {DISK}: restart lab/vsphere")
    os.environ["OS_CLIENT_CONFIG_FILE"] = CLOUDS
    openstack = OpenStackClient.connect(cloud="xms-lab")
    connection = VSphereConnection(hostname=lab["hostname"], username=lab["username"], password=lab["password"],
                                   port=lab["port"], validate_certs=False)  # fmt: skip
    work = tempfile.mkdtemp(prefix="xms-wave-bench-", dir=os.environ.get("BENCH_DIR", "/var/tmp"))
    try:
        with VSphereClient.connect(connection) as vsphere:
            vms = {name: inventory.find_vm(vsphere, name=name) for name in VMS}
            for vm in vms.values():
                reset_vm(vsphere, vm, openstack)
            fill_s = fill(lab)
            yardsticks = [yardstick(lab, work)]
            lab_path = os.pathsep.join([BIN, os.environ["PATH"]])
            os.environ["PATH"] = lab_path  # the venv's tools first, as for the conversion hosts
            via_snapshots_s = yardstick_via_snapshots(vsphere, vms, work)
            env = {**os.environ, "XMS_LAB_DIR": LAB, "PATH": lab_path}
            waves = []
            try:
                with ConversionHosts(os.path.join(work, "hosts"), HOSTS, env) as hosts:
                    files = write_inventory(lab, hosts, work)
                    for wave_round in range(WAVES):
                        if wave_round:
                            for vm in vms.values():
                                reset_vm(vsphere, vm, openstack)
                        waves.append(run_wave(hosts, files, vms, vsphere, openstack, idle_sync=not wave_round))
                        yardsticks.append(yardstick(lab, work))
                idle_s = idle_module_s(lab, work)
            finally:
                for vm in vms.values():
                    reset_vm(vsphere, vm, openstack)
    finally:  # the yardsticks' copies (kept by a failed run) and the file holding the lab's password
        shutil.rmtree(work, ignore_errors=True)
    rounds = []
    for wave, before_s, after_s in zip(waves, yardsticks, yardsticks[1:]):
        nbdcopy_rate = len(VMS) * 2 * DISK / ((before_s + after_s) / 2)
        seed_bytes = sum(v["bytes"] for v in wave["vms"].values())
        rounds.append({
            "ratio": round(seed_bytes / wave["seed_copy_s"] / nbdcopy_rate, 2),
            "ratio_while_copying": round(seed_bytes / wave["copying_s"] / nbdcopy_rate, 2),
            "end_to_end_ratio": round(seed_bytes / wave["seed_span_s"] / nbdcopy_rate, 2),
            "nbdcopy_before_after_s": [round(before_s, 2), round(after_s, 2)],
            "seed_copy_s": round(wave["seed_copy_s"], 2),
            "copying_s": round(wave["copying_s"], 2),
            "seed_span_s": round(wave["seed_span_s"], 2),
            "first_byte_spread_s": round(wave["first_byte_spread_s"], 2),
            "seed_playbook_s": round(wave["seed_playbook_s"], 1),
            "seed_bytes": seed_bytes,
        })  # fmt: skip
    middle = sorted(range(len(rounds)), key=lambda i: rounds[i]["ratio"])[len(rounds) // 2]
    seed_rate = statistics.median(r["seed_bytes"] / r["seed_copy_s"] for r in rounds)
    print(json.dumps({
        "case": "wave_4vms_x_2disks_x_2GiB_on_2_hosts",
        "fill_s": round(fill_s, 1),
        "waves": len(rounds),
        "ratio": statistics.median(r["ratio"] for r in rounds),
        "ratio_min_max": [min(r["ratio"] for r in rounds), max(r["ratio"] for r in rounds)],
        "ratio_while_copying": statistics.median(r["ratio_while_copying"] for r in rounds),
        "end_to_end_ratio": statistics.median(r["end_to_end_ratio"] for r in rounds),
        "nbdcopy_s": [round(y, 2) for y in yardsticks],
        "nbdcopy_via_snapshots_s": round(via_snapshots_s, 2),
        "ratio_same_source_path": round(seed_rate * via_snapshots_s / (len(VMS) * 2 * DISK), 2),
        "rounds": rounds,
        "median_round_per_vm": waves[middle]["vms"],
        "idle_sync_playbook_s": round(waves[0]["sync_playbook_s"], 1),
        "idle_sync_in_module_s": waves[0]["idle_in_module_s"],
        "idle_incremental_module_s": round(idle_s, 2),
        "peak_rss_mib": {h: round(max(w["peak_rss_kib"][h] for w in waves) / 1024, 1) for h in HOSTS},
        "memory_per_copying_vm": memory_per_vm(waves),
    }, indent=1))  # fmt: skip


def memory_per_vm(waves):
    """Each host's peak PSS over its copying VMs (two here, each copying two disks), with what it was
    made of at that peak, against the bound bench/README.md states (``BOUND_MIB_PER_VM``)."""
    per_host = {}
    for host in HOSTS:
        wave = max(waves, key=lambda w, h=host: w["peak_pss_kib"][h])
        vms = sum(1 for vm in wave["vms"].values() if vm["host"] == host)
        per_host[host] = {
            "vms": vms,
            "peak_pss_mib": round(wave["peak_pss_kib"][host] / 1024, 1),
            "per_vm_mib": round(wave["peak_pss_kib"][host] / 1024 / vms, 1),
            "by_kind_mib": {k: round(v / 1024, 1) for k, v in sorted(wave["pss_by_kind_kib"][host].items())},
        }
    worst = max(h["per_vm_mib"] for h in per_host.values())
    return {"hosts": per_host, "bound_mib_per_vm": BOUND_MIB_PER_VM, "within_bound": worst <= BOUND_MIB_PER_VM,
            "kinds": KINDS}  # fmt: skip


def write_inventory(lab, hosts, work):
    """The wave's inventory, and the vCenter password in a file of its own (0600, in the private work
    directory, removed with it): the paths to give ansible-playbook."""
    secrets = os.path.join(work, "vcenter.json")
    fd = os.open(secrets, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"vcenter_password": lab["password"]}, handle)
    inventory_doc = {"all": {
        "vars": {
            "warm_migration_vcenter": {**{k: lab[k] for k in ("hostname", "port", "username")},
                                       "password": "{{ vcenter_password }}", "vcenter_validate_certs": False},
            "warm_migration_cloud": {"cloud": "xms-lab"},
            "warm_migration_data_path": {"vddk_libdir": VDDK_LIBDIR},
        },
        "children": {
            "conversion_hosts": {"hosts": {h.name: h.inventory_vars(hosts.key) for h in hosts.hosts}},
            "wave1": {"hosts": {name: {} for name in VMS},
                      "vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                               "warm_migration_volume_type": "standard-ssd", "warm_migration_availability_zone": "az1",
                               "warm_migration_network_map": [{"source": "DC0_DVPG0", "network": "lab-net-a"}]}},
        },
    }}  # fmt: skip
    path = os.path.join(work, "inventory.json")
    with open(path, "w") as handle:
        json.dump(inventory_doc, handle)
    return path, secrets


def run_wave(hosts, files, vms, vsphere, openstack, idle_sync):
    """The seed playbook on the wave (and, with ``idle_sync``, the sync playbook after it): its figures."""
    path, secrets = files
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": COLLECTIONS, "ANSIBLE_LOCALHOST_WARNING": "false",
           "ANSIBLE_PIPELINING": "true", "ANSIBLE_HOST_KEY_CHECKING": "false", "ANSIBLE_CALLBACK_RESULT_FORMAT": "json",
           "ANSIBLE_FORKS": "8"}  # fmt: skip

    def playbook(name):
        argv = [os.path.join(BIN, "ansible-playbook"), "-i", path, "-e", f"@{secrets}", "-e", "wave=wave1",
                "-e", "warm_migration_serial=4", "-v", f"xms.warm_migration.{name}"]  # fmt: skip
        started = time.monotonic()
        run = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if run.returncode != 0:
            lost = [line for line in run.stdout.splitlines() if "UNREACHABLE" in line or "FAILED!" in line]
            raise SystemExit(f"{name} failed: {lost}{run.stdout[-2000:]}{run.stderr[-2000:]}")
        return time.monotonic() - started, run.stdout

    with RssSampler(hosts.hosts) as rss:
        seed_s, seed_out = playbook("seed")
    seeds = results_with(seed_out, "snapshot_seconds")
    spans, copies, per_vm = [], [], {}
    for name, vm in vms.items():
        state = store.load(openstack, MigrationContext.read(vsphere, vm).migration_id)
        result = seeds[name]
        start = state.synced_at.timestamp()  # the seed's snapshot was asked for then
        spans.append((start, start + result["duration_seconds"]))
        copies.extend((d["stats"]["started_at"], d["stats"]["started_at"] + d["stats"]["elapsed_seconds"])
                      for d in result["disks"])  # fmt: skip
        per_vm[name] = {
            "host": next(h.name for h in hosts.hosts if os.path.exists(
                os.path.join(h.state_dir, f"{state.migration_id}.lock"))),
            "bytes": result["bytes_copied"],
            "seed_s": result["duration_seconds"],
            "snapshot_s": result["snapshot_seconds"],
            "largest_disk_copy_s": round(max(d["stats"]["elapsed_seconds"] for d in result["disks"]), 2),
            "disk_copies": [(d["stats"]["started_at"], d["stats"]["elapsed_seconds"]) for d in result["disks"]],
            "seed_started_at": start,
        }  # fmt: skip
    first_bytes = [min(start for start, _s in vm["disk_copies"]) for vm in per_vm.values()]
    wave = {
        "seed_playbook_s": seed_s,
        "seed_span_s": max(end for _s, end in spans) - min(start for start, _e in spans),
        "seed_copy_s": max(end for _s, end in copies) - min(start for start, _e in copies),
        "copying_s": _union_s(copies),
        "first_byte_spread_s": max(first_bytes) - min(first_bytes),
        "vms": per_vm,
        "peak_rss_kib": rss.peak,
        "peak_pss_kib": rss.peak_pss,
        "pss_by_kind_kib": rss.pss_by_kind,
    }
    if idle_sync:
        sync_s, sync_out = playbook("sync")
        wave["sync_playbook_s"] = sync_s
        idle = results_with(sync_out, "snapshot_seconds")
        wave["idle_in_module_s"] = {name: r["duration_seconds"] for name, r in idle.items()}
    return wave


def _union_s(intervals):
    """Seconds in which at least one of ``intervals`` ran (overlaps counted once)."""
    total, reached = 0.0, float("-inf")
    for start, end in sorted(intervals):
        total += max(0.0, end - max(start, reached))
        reached = max(reached, end)
    return total


if __name__ == "__main__":
    main()
