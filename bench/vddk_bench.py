"""The collection's VDDK reader against qemu-nbd serving the same snapshot view, on the labs.

The first disk of lab-vm-bench-1 gets SIZE of random data through the lab's live export (the
rest stays a hole), then one snapshot of the VM is taken. Each round copies that disk with
``nbdcopy`` to ``null:`` in the copy engine's request size (``CopyOptions.request_size``, 512 KiB:
what a seed asks the reader for) twice, alternating: through nbdkit + the collection's reader
(``vddk_reader: xms``, opened by the adapter's ``open_disk``) + the lab's VDDK, and, as the
yardstick, straight from ``qemu-nbd`` on the same internal snapshot (``lab/vsphere/cbt.py view``),
which is what the lab's VDDK itself reads. Both with 4 connections, then the reader with 1.

The lab's VDDK reads that view over NBD itself, so the reader's path has one NBD hop more than the
yardstick (qemu-nbd -> the lab's VDDK in nbdkit -> nbdcopy), which real VDDK replaces with NFC from
ESXi. A second yardstick shows what that hop costs: nbdkit's own C ``nbd`` plugin relaying the same
view (the same hop, no reader); ``reader_vs_relay`` is relay_s / reader_s, the reader's own cost.

    XMS_LAB_DIR=/var/lib/xms-lab .venv/bin/python bench/vddk_bench.py [ROUNDS]

Prints one JSON object per case: ``ratio`` = yardstick_s / reader_s (goal >= 0.8 with 4 connections),
``reader_vs_relay`` as above (both medians of per-round ratios),
``peak_rss_mib`` of the nbdkit process (its Python host and the reader), ``bytes`` copied (the
allocated data; the holes are skipped by both, as a seed skips them).
"""

import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

import labs
from checkout import ROOT

from ansible_collections.xms.warm_migration.plugins.module_utils.copy.copier import CopyOptions
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere import cbt, datapath, inventory
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere.client import VSphereClient

VDDK_LIBDIR = os.path.join(labs.LAB, "vsphere", "vddk")
CBT = os.path.join(ROOT, "lab", "vsphere", "cbt.py")
VM = "lab-vm-bench-1"
SIZE = 2 << 30  # the whole disk
REQUEST = CopyOptions().request_size


def nbdcopy_s(uri: str, connections: int) -> float:
    started = time.monotonic()
    subprocess.run(["nbdcopy", f"--connections={connections}", f"--request-size={REQUEST}", uri, "null:"], check=True)
    return time.monotonic() - started


@contextlib.contextmanager
def serving(argv: list, sock: str, what: str):
    """``argv`` started, serving NBD on ``sock``; stopped at the end."""
    proc = subprocess.Popen(argv)
    try:
        while not os.path.exists(sock):
            if proc.poll() is not None:
                raise SystemExit(f"{what} did not start")
            time.sleep(0.02)
        yield f"nbd+unix:///?socket={sock}"
    finally:
        proc.kill()
        proc.wait()


def lab_view(snap_moref: str, key: int, work: str):
    """qemu-nbd on the lab's internal snapshot of the disk: what the lab's VDDK reads."""
    sock = os.path.join(work, "view.sock")
    return serving([sys.executable, CBT, "view", VM, snap_moref, str(key), sock], sock, "the lab's snapshot view")


def relay(view: str, work: str):
    """nbdkit's C nbd plugin serving ``view``: the NBD hop the lab's VDDK adds, without a reader."""
    sock = os.path.join(work, "relay.sock")
    argv = ["nbdkit", "--readonly", "--foreground", "--unix", sock, "nbd", f"socket={view.split('socket=')[1]}"]
    return serving(argv, sock, "nbdkit's nbd plugin")


def peak_rss_mib(socket_path: str) -> float:
    """VmHWM of the nbdkit serving ``socket_path``."""
    pid = subprocess.run(["pgrep", "-f", socket_path], capture_output=True, text=True, check=True).stdout.split()[0]
    with open(f"/proc/{pid}/status") as status:
        kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    return round(kib / 1024, 1)


def allocated_bytes(uri: str) -> int:
    done = subprocess.run(["nbdinfo", "--map", "--totals", uri], capture_output=True, text=True, check=True)
    return sum(int(line.split()[0]) for line in done.stdout.splitlines() if line.split()[2] == "0")


def main() -> int:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    lab = labs.lab_json()
    key = next(iter(lab["vms"][VM]["disks"]))
    labs.fill_with_random(VM, key, SIZE)
    work = os.path.join(os.environ.get("BENCH_DIR", "/var/tmp"), f"xms-vddk-bench-{os.getpid()}")
    os.makedirs(work)
    with VSphereClient.connect(labs.vcenter(lab)) as vsphere:
        vm = inventory.find_vm(vsphere, name=VM)
        disk = next(d for d in inventory.inventory(vsphere, vm).disks if str(d.key) == key)
        with (
            cbt.sync_snapshot(vsphere, vm, purpose="vddk bench") as snap,
            lab_view(snap.moref, disk.key, work) as view,
            relay(view, work) as relayed,
        ):
            cases = {4: ([], [], [], []), 1: ([], [], [], [])}
            for _round in range(rounds):
                for connections, (reader_s, yardstick_s, relay_s, rss) in cases.items():
                    with datapath.open_disk(vsphere, vm, snap, disk, vddk_libdir=VDDK_LIBDIR,
                                            reader=datapath.Reader.XMS) as uri:  # fmt: skip
                        reader_s.append(nbdcopy_s(uri, connections))
                        rss.append(peak_rss_mib(uri.split("socket=")[1]))
                        copied = allocated_bytes(uri)
                    yardstick_s.append(nbdcopy_s(view, 4))
                    relay_s.append(nbdcopy_s(relayed, connections))
    shutil.rmtree(work)
    for connections, (reader_s, yardstick_s, relay_s, rss) in cases.items():
        print(json.dumps({
            "case": f"seed_{SIZE >> 30}GiB_through_the_xms_reader_{connections}_connection{'s' * (connections > 1)}",
            "bytes": copied,
            "reader_s": round(statistics.median(reader_s), 2),
            "yardstick_s": round(statistics.median(yardstick_s), 2),
            "relay_s": round(statistics.median(relay_s), 2),
            "ratio": round(statistics.median(y / r for y, r in zip(yardstick_s, reader_s)), 2),
            "reader_vs_relay": round(statistics.median(y / r for y, r in zip(relay_s, reader_s)), 2),
            "peak_rss_mib": max(rss),
            "rounds": rounds,
        }))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
