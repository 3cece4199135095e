"""The NFS reader against the VDDK reader on the same lab disk, and against nbdcopy of the flat file.

lab-vm-nfs-bench's disk (on the lab's NFS datastore: a vmdk descriptor and its flat extent) gets
2 GiB of random data through the lab's live export, then one snapshot of the VM freezes the file.
Each round copies the disk PASSES times with ``nbdcopy`` to ``null:`` in the copy engine's request
size (``CopyOptions.request_size``) with 4 connections, three ways, alternating:

- ``nfs``: qemu-nbd as the NFS reader serves it (``reader: nfs``, from the datastore's read-only
  mount, opened by the adapter's ``open_disk``);
- ``vddk``: nbdkit + the collection's reader (``reader: xms``) + the lab's VDDK, which reads the
  same frozen file through its own qemu-nbd (one NBD hop more than the NFS reader: real VDDK reads
  over NFC from ESXi instead);
- ``flat``, the yardstick: nbdcopy reading the frozen flat extent itself, no server at all (from the
  page cache here: the bound of what any reader of that file could do on this machine).

    XMS_LAB_DIR=/var/lib/xms-lab .venv/bin/python bench/nfs_bench.py [ROUNDS]

Prints one JSON object: ``ratio`` = flat_s / nfs_s (what serving the file costs the NFS reader),
``nfs_vs_vddk`` = vddk_s / nfs_s, both medians of per-round ratios with their min and max.
"""

import json
import os
import statistics
import subprocess
import sys
import time

import checkout  # noqa: F401  # pylint: disable=unused-import  # imported for its effect: the collection importable
import labs

from ansible_collections.xms.warm_migration.plugins.module_utils.copy.copier import CopyOptions
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere import cbt, datapath, inventory
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere.client import VSphereClient

VDDK_LIBDIR = os.path.join(labs.LAB, "vsphere", "vddk")
MOUNTS = {"nfs-ds0": os.path.join(labs.LAB, "vsphere", "nfs-mnt", "nfs-ds0")}
VM = "lab-vm-nfs-bench"
SIZE = 2 << 30  # the whole disk
REQUEST = CopyOptions().request_size
PASSES = 5


def nbdcopy_s(source: str) -> float:
    """PASSES whole copies: one 2 GiB copy lasts about a second here, too short to time alone."""
    started = time.monotonic()
    for _pass in range(PASSES):
        subprocess.run(["nbdcopy", "--connections=4", f"--request-size={REQUEST}", source, "null:"], check=True)
    return time.monotonic() - started


def spread(values: list) -> dict:
    return {"median": round(statistics.median(values), 2), "min": round(min(values), 2), "max": round(max(values), 2)}


def main() -> int:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    lab = labs.lab_json()
    key = next(iter(lab["vms"][VM]["disks"]))
    labs.fill_with_random(VM, key, SIZE)
    times = {"nfs": [], "vddk": [], "flat": []}
    with VSphereClient.connect(labs.vcenter(lab)) as vsphere:
        vm = inventory.find_vm(vsphere, name=VM)
        disk = next(d for d in inventory.inventory(vsphere, vm).disks if str(d.key) == key)
        with cbt.sync_snapshot(vsphere, vm, purpose="nfs bench") as snap:
            frozen = snap.backing_files[disk.key].split("] ", 1)[1]
            flat = os.path.join(MOUNTS["nfs-ds0"], frozen.replace(".vmdk", "-flat.vmdk"))
            for _round in range(rounds):
                with datapath.open_disk(vsphere, vm, snap, disk, vddk_libdir=VDDK_LIBDIR, reader=datapath.Reader.NFS,
                                        nfs_mounts=MOUNTS) as uri:  # fmt: skip
                    times["nfs"].append(nbdcopy_s(uri))
                with datapath.open_disk(vsphere, vm, snap, disk, vddk_libdir=VDDK_LIBDIR,
                                        reader=datapath.Reader.XMS) as uri:  # fmt: skip
                    times["vddk"].append(nbdcopy_s(uri))
                times["flat"].append(nbdcopy_s(flat))
    print(json.dumps({
        "case": f"seed_{SIZE >> 30}GiB_through_the_nfs_reader_4_connections",
        **{f"{name}_s": spread(values) for name, values in times.items()},
        "ratio": spread([f / n for f, n in zip(times["flat"], times["nfs"])]),
        "nfs_vs_vddk": spread([v / n for v, n in zip(times["vddk"], times["nfs"])]),
        "rounds": rounds,
    }))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
