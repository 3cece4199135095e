"""The lab's stand-in for what vSphere keeps about disks: contents, snapshots and changed blocks.

Every lab VM's disks are qcow2 images served by one qemu-storage-daemon per VM
(node ``d<KEY>``, live NBD export ``live-<KEY>`` for the writer). vcsim calls
this helper (see vcsim/main.go):

- ``snapshot-create VM SNAP cbt|no-cbt``: one QMP transaction per VM takes an
  internal qcow2 snapshot of every disk (the point-in-time view nbdkit-vddk
  would read) and, with CBT on, closes the disk's dirty-bitmap epoch and opens
  the next. The snapshot's change id is ``<epoch>/<seq>``.
- ``query VM SNAP KEY START CHANGE_ID``: the changed areas since CHANGE_ID up
  to SNAP: the union of the bitmaps of the epochs in between, read over NBD
  (``qemu:dirty-bitmap``); ``*`` gives the allocated areas of SNAP. Answers at
  most WINDOW bytes per call, so clients must page by START as with vCenter.
- ``snapshot-remove``, ``snapshot-remove-all``, ``guest-ignores-shutdown``.
Lab commands: ``start`` (images and daemons from lab.json), ``stop``,
``write VM KEY --random N`` (a running guest's writes), ``reset-cbt VM``,
``view VM SNAP KEY SOCKET`` (exec qemu-nbd on a snapshot: the VDDK stand-in).

State (which epoch and sequence each disk is at, which snapshot has which
sequence) is kept in state.json next to lab.json, under a file lock.
"""

import fcntl
import json
import os
import random
import subprocess
import sys
import uuid
from contextlib import contextmanager, suppress

import nbd

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "nbd"))
from storage_daemon import Qmp, wait_for_socket

LAB = os.path.join(os.environ.get("XMS_LAB_DIR", "/var/lib/xms-lab"), "vsphere")
WINDOW = 1 << 40  # bytes per QueryChangedDiskAreas answer: disks over 2 TiB need several calls


def load(name):
    with open(os.path.join(LAB, name)) as handle:
        return json.load(handle)


@contextmanager
def locked_state():
    """state.json under an exclusive lock, saved on the way out."""
    with open(os.path.join(LAB, "state.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = os.path.join(LAB, "state.json")
        state = {"disks": {}, "snapshots": {}}
        if os.path.exists(path):
            with open(path) as handle:
                state = json.load(handle)
        yield state
        with open(path + ".tmp", "w") as handle:
            json.dump(state, handle)
        os.replace(path + ".tmp", path)


def vm_by_moref(moref):
    for name, vm in load("lab.json")["vms"].items():
        if vm["moref"] == moref:
            return name, vm
    raise SystemExit(json.dumps({"fault": f"no lab VM has moref {moref}"}))


class Daemon:
    """QMP and NBD of one VM's qemu-storage-daemon."""

    def __init__(self, vm_name):
        self.dir = os.path.join(LAB, "qsd", vm_name)
        self.nbd_socket = os.path.join(self.dir, "nbd.sock")
        self.cmd = Qmp(os.path.join(self.dir, "qmp.sock")).cmd

    def dirty(self, key, bitmap, start, end):
        """Extents of ``bitmap`` on disk ``key`` within [start, end), read over a temporary NBD export."""
        export = f"q-{key}-{bitmap}-{os.getpid()}"
        self.cmd("block-export-add", type="nbd", id=export, **{"node-name": f"d{key}"}, name=export,
                 writable=False, bitmaps=[bitmap])  # fmt: skip
        try:
            return read_extents(f"nbd+unix:///{export}?socket={self.nbd_socket}", f"qemu:dirty-bitmap:{bitmap}",
                                start, end, lambda flags: flags & 1)  # fmt: skip
        finally:
            self.cmd("block-export-del", id=export)


def read_extents(uri, context, start, end, wanted):
    """Merged ``[offset, length]`` of ``context`` in [start, end) whose flags satisfy ``wanted``."""
    handle = nbd.NBD()
    handle.add_meta_context(context)
    handle.connect_uri(uri)
    found = []
    offset = start
    while offset < end:
        replies = []
        handle.block_status(min(end - offset, 1 << 30), offset, collector(context, replies))
        for pos, length, flags in replies:
            length = min(length, end - pos)
            if length > 0 and wanted(flags):
                found.append([pos, length])
        offset = min(end, replies[-1][0] + replies[-1][1])
    handle.shutdown()
    return merge(found)


def collector(context, replies):
    def collect(ctx, base, entries, err):
        if ctx == context:
            pos = base
            for i in range(0, len(entries), 2):
                replies.append((pos, entries[i], entries[i + 1]))
                pos += entries[i]
        return 0

    return collect


def answer(payload):
    print(json.dumps(payload))


# --- what vcsim asks ----------------------------------------------------------------------
def snapshot_create(vm_moref, snap_moref, cbt):
    name, vm = vm_by_moref(vm_moref)
    daemon = Daemon(name)
    with locked_state() as state:
        actions, ids = [], {}
        for key in vm["disks"]:
            disk = state["disks"].setdefault(f"{name}/{key}", {"epoch": uuid.uuid4().hex[:16], "seq": 0, "cbt": False})
            actions.append(
                {"type": "blockdev-snapshot-internal-sync", "data": {"device": f"d{key}", "name": snap_moref}}
            )
            if cbt == "cbt" and disk["cbt"]:
                seq = disk["seq"] + 1
                actions.append(
                    {"type": "block-dirty-bitmap-disable", "data": {"node": f"d{key}", "name": f"e{disk['seq']}"}}
                )
                actions.append({"type": "block-dirty-bitmap-add", "data": {"node": f"d{key}", "name": f"e{seq}"}})
                disk["seq"] = seq
                ids[key] = f"{disk['epoch']}/{seq}"
            elif cbt == "cbt":
                # CBT was just enabled: tracking starts now; this snapshot's own id starts the history.
                actions.append(
                    {"type": "block-dirty-bitmap-add", "data": {"node": f"d{key}", "name": f"e{disk['seq']}"}}
                )
                disk["cbt"] = True
                ids[key] = f"{disk['epoch']}/{disk['seq']}"
        daemon.cmd("transaction", actions=actions)
        state["snapshots"][snap_moref] = {"vm": name, "ids": ids}
    answer({"change_ids": ids})


def snapshot_remove(vm_moref, snap_moref):
    name, vm = vm_by_moref(vm_moref)
    daemon = Daemon(name)
    for key in vm["disks"]:
        with suppress(RuntimeError):  # already gone
            daemon.cmd("blockdev-snapshot-delete-internal-sync", device=f"d{key}", name=snap_moref)
    with locked_state() as state:
        state["snapshots"].pop(snap_moref, None)
    answer({})


def snapshot_remove_all(vm_moref):
    name, _vm = vm_by_moref(vm_moref)
    with locked_state() as state:
        morefs = [m for m, s in state["snapshots"].items() if s["vm"] == name]
    for moref in morefs:
        with open(os.devnull, "w") as quiet:
            sys.stdout, saved = quiet, sys.stdout
            try:
                snapshot_remove(vm_moref, moref)
            finally:
                sys.stdout = saved
    answer({})


def query(vm_moref, snap_moref, key, start, change_id):
    name, vm = vm_by_moref(vm_moref)
    size = vm["disks"][key]["capacity"]
    start = int(start)
    end = min(size, start + WINDOW)
    with locked_state() as state:
        disk = state["disks"].get(f"{name}/{key}")
        snap = state["snapshots"].get(snap_moref)
    if snap is None:
        return answer({"fault": f"snapshot {snap_moref} does not exist"})
    if change_id == "*":
        with snapshot_view(name, snap_moref, key) as uri:
            areas = read_extents(uri, "base:allocation", start, end, lambda flags: not flags & 1)
        return answer({"start": start, "length": end - start, "areas": areas})
    epoch, _slash, seq = change_id.partition("/")
    if disk is None or not disk["cbt"] or epoch != disk["epoch"] or key not in snap["ids"]:
        return answer({"fault": f"change id {change_id} is not valid for disk {key} (CBT was reset or is off)"})
    upto = int(snap["ids"][key].partition("/")[2])
    daemon = Daemon(name)
    areas = []
    for k in range(int(seq), upto):
        areas += daemon.dirty(key, f"e{k}", start, end)
    answer({"start": start, "length": end - start, "areas": merge(areas)})


def merge(areas):
    merged = []
    for pos, length in sorted(areas):
        if merged and pos <= merged[-1][0] + merged[-1][1]:
            merged[-1][1] = max(merged[-1][0] + merged[-1][1], pos + length) - merged[-1][0]
        else:
            merged.append([pos, length])
    return merged


def guest_ignores_shutdown(vm_moref):
    _name, vm = vm_by_moref(vm_moref)
    answer({"ignores": bool(vm.get("guest_ignores_shutdown"))})


# --- the lab's own commands -----------------------------------------------------------------
@contextmanager
def snapshot_view(vm_name, snap_moref, key):
    """A read-only NBD view of one disk at one snapshot (qemu-nbd reading the internal snapshot)."""
    sock = os.path.join(LAB, "qsd", vm_name, f"view-{key}-{os.getpid()}.sock")
    proc = subprocess.Popen(view_argv(vm_name, snap_moref, key, sock), stderr=subprocess.DEVNULL)
    try:
        wait_for_socket(sock, proc)
        yield f"nbd+unix:///?socket={sock}"
    finally:
        proc.kill()
        proc.wait()
        if os.path.exists(sock):
            os.unlink(sock)


def view_argv(vm_name, snap_moref, key, sock):
    image = load("lab.json")["vms"][vm_name]["disks"][key]["image"]
    # The storage daemon holds the image open for writing: read the (immutable) snapshot without locking.
    return ["qemu-nbd", "--read-only", "--persistent", "--shared=16", "--image-opts",
            f"--load-snapshot=snapshot.name={snap_moref}", f"--socket={sock}",
            f"driver=qcow2,file.driver=file,file.filename={image},file.locking=off"]  # fmt: skip


def start():
    """Create missing images and start a storage daemon per VM."""
    for name, vm in load("lab.json")["vms"].items():
        if not vm["disks"]:
            continue
        qsd_dir = os.path.join(LAB, "qsd", name)
        os.makedirs(qsd_dir, exist_ok=True)
        argv = ["qemu-storage-daemon",
                "--nbd-server", f"addr.type=unix,addr.path={qsd_dir}/nbd.sock,max-connections=32",
                "--chardev", f"socket,id=qmp0,path={qsd_dir}/qmp.sock,server=on,wait=off", "--monitor", "chardev=qmp0",
                "--pidfile", f"{qsd_dir}/qsd.pid"]  # fmt: skip
        for key, disk in vm["disks"].items():
            if not os.path.exists(disk["image"]) and disk.get("source_image"):
                subprocess.run(["qemu-img", "convert", "-q", "-O", "qcow2", disk["source_image"], disk["image"]],
                               check=True)  # fmt: skip
            elif not os.path.exists(disk["image"]):
                subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", disk["image"], str(disk["capacity"])],
                               check=True)  # fmt: skip
                if disk.get("seed_mib"):
                    pattern = int(key) % 251
                    subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -P {pattern} 0 {disk['seed_mib']}M",
                                    disk["image"]], check=True, capture_output=True)  # fmt: skip
            argv += ["--blockdev", f"driver=file,node-name=f{key},filename={disk['image']}",
                     "--blockdev", f"driver=qcow2,node-name=d{key},file=f{key}",
                     "--export", f"type=nbd,id=live-{key},node-name=d{key},name=live-{key},writable=on"]  # fmt: skip
        with open(os.path.join(qsd_dir, "qsd.log"), "ab") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
        wait_for_socket(os.path.join(qsd_dir, "qmp.sock"), proc)


def stop():
    for name in load("lab.json")["vms"]:
        pidfile = os.path.join(LAB, "qsd", name, "qsd.pid")
        if os.path.exists(pidfile):
            with open(pidfile) as handle, suppress(ProcessLookupError, ValueError):
                os.kill(int(handle.read()), 15)


def write(vm_name, key, count):
    """Write ``count`` random 64 KiB-1 MiB blocks through the live export; prints them as [offset, length]."""
    vm = load("lab.json")["vms"][vm_name]
    handle = nbd.NBD()
    handle.connect_uri(f"nbd+unix:///live-{key}?socket={os.path.join(LAB, 'qsd', vm_name, 'nbd.sock')}")
    rng = random.Random()
    size = vm["disks"][key]["capacity"]
    written = []
    for _block in range(count):
        length = rng.choice([64 << 10, 256 << 10, 1 << 20])
        offset = rng.randrange(0, size - length, 64 << 10)
        handle.pwrite(rng.randbytes(length), offset)
        written.append([offset, length])
    handle.flush()
    handle.shutdown()
    answer({"written": written})


def reset_cbt(vm_name):
    """What a CBT reset does to change ids: a new epoch, the old history gone."""
    vm = load("lab.json")["vms"][vm_name]
    daemon = Daemon(vm_name)
    with locked_state() as state:
        for key in vm["disks"]:
            disk = state["disks"].get(f"{vm_name}/{key}")
            if not disk:
                continue
            for k in range(disk["seq"] + 1):
                with suppress(RuntimeError):
                    daemon.cmd("block-dirty-bitmap-remove", node=f"d{key}", name=f"e{k}")
            state["disks"][f"{vm_name}/{key}"] = {"epoch": uuid.uuid4().hex[:16], "seq": 0, "cbt": False}
    answer({})


def main(argv):
    command, args = argv[0], argv[1:]
    handlers = {
        "snapshot-create": snapshot_create,
        "snapshot-remove": snapshot_remove,
        "snapshot-remove-all": snapshot_remove_all,
        "query": query,
        "guest-ignores-shutdown": guest_ignores_shutdown,
        "start": start,
        "stop": stop,
        "reset-cbt": reset_cbt,
    }
    if command == "write":
        return write(args[0], args[1], int(args[2]))
    if command == "view":
        vm_name, _vm = vm_by_moref(args[0]) if args[0].startswith("vm-") else (args[0], None)
        os.execvp("qemu-nbd", view_argv(vm_name, args[1], args[2], args[3]))
    try:
        handlers[command](*args)
    except RuntimeError as err:
        answer({"fault": str(err)})


if __name__ == "__main__":
    main(sys.argv[1:])
