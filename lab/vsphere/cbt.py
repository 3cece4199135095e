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
- ``reconfigured VM cbt|no-cbt DISKS``: after a ReconfigVM_Task. CBT switched
  off drops the tracking history (vCenter clears the change ids; tracking starts
  anew at the next snapshot after it is switched on again, in a new epoch). A
  disk whose capacity grew is resized under the running daemon (``block_resize``,
  as ESXi grows the vmdk); its dirty bitmaps grow with it and, as with vSphere,
  the new area is not reported changed until the guest writes it. A disk added
  gets a new empty image on the running daemon; a removed one is detached.
- ``revert VM SNAP``: RevertToSnapshot_Task; the disks and their change ids go
  back to the snapshot (the next snapshot's sequence is the snapshot's plus one).
- ``snapshot-remove``, ``snapshot-remove-all``, ``guest-ignores-shutdown``.
Lab commands: ``start`` (images and daemons from lab.json), ``stop``,
``write VM KEY N [SIZE]`` (a running guest's writes), ``mark VM KEY OFFSET TEXT [LENGTH]``
(a guest's write of a known plaintext), ``zero VM KEY OFFSET LENGTH``
(a guest's TRIM or write-zeroes: the area becomes a hole of the disk),
``view VM SNAP KEY SOCKET`` (exec qemu-nbd on a snapshot: the yardstick the reader tests read the same view from).

State (which epoch and sequence each disk is at, which snapshot has which
sequence) is kept in state.json next to lab.json, under a file lock.
"""

import fcntl
import glob
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager, suppress

import nbd

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "nbd"))
from storage_daemon import Qmp, wait_for_socket

LAB = os.path.join(os.environ.get("XMS_LAB_DIR", "/var/lib/xms-lab"), "vsphere")
WINDOW = 1 << 40  # bytes per QueryChangedDiskAreas answer: disks over 2 TiB need several calls
VDDK = os.path.join(LAB, "vddk")  # the lab's VDDK (vddk/vixDiskLib.c): its lab.conf and snapshot markers


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


def on_nfs(vm):
    """Whether the VM's disks are on the lab's NFS datastore (vmdk files, a delta per snapshot)."""
    return bool(vm.get("nfs_datastore"))


def top(vm, key):
    """The node the guest writes through and the dirty bitmaps live on: the qcow2 node, or on the NFS
    datastore the throttle filter above the vmdk chain, which stays while snapshots change the chain."""
    return f"t{key}" if on_nfs(vm) else f"d{key}"


def vnode(path):
    """The node name of one vmdk file of a chain (named after the file: it keeps its name as the chain changes)."""
    return "v" + hashlib.sha1(path.encode()).hexdigest()[:12]


def ds_file(vm, path):
    """``[nfs-ds0] dir/file.vmdk`` for a file of the NFS datastore's directory."""
    root = vm["nfs_datastore"]
    return f"[{os.path.basename(root)}] {os.path.relpath(path, root)}"


class Daemon:
    """QMP and NBD of one VM's qemu-storage-daemon."""

    def __init__(self, vm_name):
        self.dir = os.path.join(LAB, "qsd", vm_name)
        self.nbd_socket = os.path.join(self.dir, "nbd.sock")
        self.cmd = Qmp(os.path.join(self.dir, "qmp.sock")).cmd
        self.vm = load("lab.json")["vms"][vm_name]

    def wait_export_gone(self, export):
        for _attempt in range(200):
            if export not in {e["id"] for e in self.cmd("query-block-exports")}:
                return
            time.sleep(0.05)
        raise RuntimeError(f"export {export} is still in use")

    def dirty(self, key, bitmap, start, end):
        """Extents of ``bitmap`` on disk ``key`` within [start, end), read over a temporary NBD export."""
        export = f"q-{key}-{bitmap}-{os.getpid()}"
        self.cmd("block-export-add", type="nbd", id=export, **{"node-name": top(self.vm, key)}, name=export,
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
        actions, ids, taken = [], {}, {"vm": name}
        for key in vm["disks"]:
            disk = state["disks"].setdefault(f"{name}/{key}", {"epoch": uuid.uuid4().hex[:16], "seq": 0, "cbt": False})
            if on_nfs(vm):
                # As ESXi: the file written so far is frozen and a new delta above it takes the writes.
                chain = disk.setdefault("chain", [vm["disks"][key]["image"]])
                delta = new_delta(daemon, chain[-1], vm["disks"][key]["capacity"])
                snapshot = {"node": vnode(chain[-1]), "overlay": vnode(delta)}
                actions.append({"type": "blockdev-snapshot", "data": snapshot})
                taken.setdefault("frozen", {})[key], taken.setdefault("delta", {})[key] = chain[-1], delta
                chain.append(delta)
            else:
                actions.append(
                    {"type": "blockdev-snapshot-internal-sync", "data": {"device": f"d{key}", "name": snap_moref}}
                )
            if cbt == "cbt" and disk["cbt"]:
                seq = disk["seq"] + 1
                actions.append(
                    {"type": "block-dirty-bitmap-disable", "data": {"node": top(vm, key), "name": f"e{disk['seq']}"}}
                )
                actions.append({"type": "block-dirty-bitmap-add", "data": {"node": top(vm, key), "name": f"e{seq}"}})
                disk["seq"] = seq
                ids[key] = f"{disk['epoch']}/{seq}"
            elif cbt == "cbt":
                # CBT was just enabled: tracking starts now; this snapshot's own id starts the history.
                actions.append(
                    {"type": "block-dirty-bitmap-add", "data": {"node": top(vm, key), "name": f"e{disk['seq']}"}}
                )
                disk["cbt"] = True
                ids[key] = f"{disk['epoch']}/{disk['seq']}"
        daemon.cmd("transaction", actions=actions)
        state["snapshots"][snap_moref] = {**taken, "ids": ids}
    with open(os.path.join(VDDK, "snapshots", snap_moref), "w"):
        pass  # the lab's VDDK serves a snapshot while its marker exists
    # On the NFS datastore the VM's disks are its new deltas from now on (the snapshot keeps the frozen files).
    answer({"change_ids": ids, "files": {key: ds_file(vm, delta) for key, delta in taken.get("delta", {}).items()}})


def new_delta(daemon, parent, capacity):
    """The next delta file above ``parent`` (``<disk>-000001.vmdk`` and its extent, as ESXi numbers them), added
    to the daemon as a node of its own. QEMU writes no vmfsSparse or SEsparse delta: it is a sparse vmdk
    (twoGbMaxExtentSparse) whose descriptor names its parent as ESXi's do (parentCID, parentFileNameHint).
    Made without opening the parent, which the daemon holds for writing."""
    stem = re.sub(r"-\d{6}$", "", os.path.splitext(parent)[0])
    number = 1
    while os.path.exists(f"{stem}-{number:06d}.vmdk"):
        number += 1
    delta = f"{stem}-{number:06d}.vmdk"
    subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=twoGbMaxExtentSparse", delta,
                    str(capacity)], check=True)  # fmt: skip
    with open(parent) as handle:
        parent_cid = re.search(r"^CID=(\w+)", handle.read(), re.M).group(1)
    with open(delta) as handle:
        text = handle.read()
    text = re.sub(r"^parentCID=\w+", f"parentCID={parent_cid}", text, flags=re.M)
    text = re.sub(r"^(createType=.*)$", f'\\1\nparentFileNameHint="{os.path.basename(parent)}"', text, flags=re.M)
    with open(delta, "w") as handle:
        handle.write(text)
    daemon.cmd("blockdev-add", driver="vmdk", **{"node-name": vnode(delta)},
               file={"driver": "file", "filename": delta}, backing=None)  # fmt: skip
    return delta


def snapshot_remove(vm_moref, snap_moref):
    answer(remove_snapshot(vm_moref, snap_moref))


def remove_snapshot(vm_moref, snap_moref):
    """Drop one snapshot. On the NFS datastore, as ESXi consolidates: the delta taken at the snapshot is
    committed into the file it froze; the VM's disks and later snapshots that named the delta name that file."""
    name, vm = vm_by_moref(vm_moref)
    daemon = Daemon(name)
    with suppress(FileNotFoundError):  # first the marker: no VDDK read returns data of a dropped snapshot
        os.unlink(os.path.join(VDDK, "snapshots", snap_moref))
    if not on_nfs(vm):
        for key in vm["disks"]:
            with suppress(RuntimeError):  # already gone
                daemon.cmd("blockdev-snapshot-delete-internal-sync", device=f"d{key}", name=snap_moref)
    renamed = {"vm_files": {}, "snapshot_files": {}}
    with locked_state() as state:
        snap = state["snapshots"].pop(snap_moref, None)
        for key, delta in (snap or {}).get("delta", {}).items():
            frozen = snap["frozen"][key]
            commit(daemon, top(vm, key), delta, frozen)
            chain = state["disks"][f"{name}/{key}"]["chain"]
            chain.remove(delta)
            renamed["vm_files"][key] = ds_file(vm, chain[-1])
            for moref, other in state["snapshots"].items():
                if other.get("frozen", {}).get(key) == delta:
                    other["frozen"][key] = frozen
                    renamed["snapshot_files"].setdefault(moref, {})[key] = ds_file(vm, frozen)
    return renamed


def commit(daemon, device, delta, into):
    """Merge ``delta`` into the file below it under the running daemon (block-commit, completed when it is an
    active commit), then drop its node and its files."""
    job = f"c{os.getpid()}"
    daemon.cmd("block-commit", **{"job-id": job, "device": device, "top-node": vnode(delta), "base-node": vnode(into),
                                  "auto-dismiss": False})  # fmt: skip
    while True:
        status = next(j for j in daemon.cmd("query-jobs") if j["id"] == job)
        if status["status"] == "ready":
            daemon.cmd("job-complete", id=job)
        elif status["status"] == "concluded":
            daemon.cmd("job-dismiss", id=job)
            if status.get("error"):
                raise RuntimeError(f"committing {delta}: {status['error']}")
            break
        time.sleep(0.02)
    daemon.cmd("blockdev-del", **{"node-name": vnode(delta)})
    for path in [delta, *glob.glob(glob.escape(os.path.splitext(delta)[0]) + "-s[0-9][0-9][0-9].vmdk")]:
        os.unlink(path)


def snapshot_remove_all(vm_moref):
    name, _vm = vm_by_moref(vm_moref)
    with locked_state() as state:
        morefs = [m for m, s in state["snapshots"].items() if s["vm"] == name]
    renamed = {"vm_files": {}}
    for moref in reversed(morefs):  # newest first: each removal merges the delta the VM writes to
        renamed["vm_files"].update(remove_snapshot(vm_moref, moref)["vm_files"])
    answer(renamed)


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
    if int(seq) < disk.get("history_from", 0):
        return answer({"fault": f"change id {change_id} is older than the tracking history of disk {key}"})
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


def reconfigured(vm_moref, cbt, described):
    if not os.path.exists(os.path.join(LAB, "lab.json")):
        return answer({})  # populate.py is shaping the VMs: there are no lab disks yet
    name, vm = vm_by_moref(vm_moref)
    disks = json.loads(described)
    daemon = Daemon(name)
    cleared = False
    with locked_state() as state:
        if cbt == "no-cbt":
            for key in vm["disks"]:
                disk = state["disks"].get(f"{name}/{key}")
                if disk and disk["cbt"]:
                    for k in range(disk["seq"] + 1):
                        with suppress(RuntimeError):
                            daemon.cmd("block-dirty-bitmap-remove", node=top(vm, key), name=f"e{k}")
                    state["disks"][f"{name}/{key}"] = {"epoch": uuid.uuid4().hex[:16], "seq": 0, "cbt": False}
                    cleared = True
        lab = load("lab.json")
        entry = lab["vms"][name]["disks"]
        grown = {k: d["capacity"] for k, d in disks.items() if k in entry and d["capacity"] > entry[k]["capacity"]}
        if on_nfs(vm) and (grown or set(disks) != set(entry)):
            return answer({"fault": "the lab grows, adds and removes disks of VMs on its qcow2 datastore only"})
        for key, size in grown.items():
            # The guest's live export does not share the right to resize: detach it for the resize.
            daemon.cmd("block-export-del", id=f"live-{key}")
            daemon.wait_export_gone(f"live-{key}")
            daemon.cmd("block_resize", **{"node-name": f"d{key}"}, size=size)
            daemon.cmd("block-export-add", type="nbd", id=f"live-{key}", **{"node-name": f"d{key}"},
                       name=f"live-{key}", writable=True)  # fmt: skip
            entry[key]["capacity"] = size
        added = sorted(set(disks) - set(entry)) if vm["disks"] else []  # (VMs the lab serves no disks for stay so)
        for key in added:  # a new, empty disk: its image, and its nodes and export on the running daemon
            image = os.path.join(LAB, "disks", f"{name}-{key}.qcow2")
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", image, str(disks[key]["capacity"])], check=True)
            daemon.cmd("blockdev-add", driver="file", **{"node-name": f"f{key}"}, filename=image)
            daemon.cmd("blockdev-add", driver="qcow2", **{"node-name": f"d{key}"}, file=f"f{key}")
            daemon.cmd("block-export-add", type="nbd", id=f"live-{key}", **{"node-name": f"d{key}"}, name=f"live-{key}",
                       writable=True)  # fmt: skip
            entry[key] = {"image": image, "capacity": disks[key]["capacity"], "seed_mib": 0, "file": disks[key]["file"]}
        removed = sorted(set(entry) - set(disks))
        for key in removed:  # the disk is detached; its image stays on the datastore, as vSphere keeps the vmdk
            daemon.cmd("block-export-del", id=f"live-{key}")
            daemon.cmd("blockdev-del", **{"node-name": f"d{key}"})
            daemon.cmd("blockdev-del", **{"node-name": f"f{key}"})
            del entry[key]
            state["disks"].pop(f"{name}/{key}", None)
        if grown or added or removed:
            path = os.path.join(LAB, "lab.json")
            fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                json.dump(lab, handle, indent=1)
            os.replace(path + ".tmp", path)
            write_vddk_conf(lab)
    answer({"clear_change_ids": cleared, "grown": grown, "added": added, "removed": removed})


def revert(vm_moref, snap_moref):
    """RevertToSnapshot: every disk goes back to the snapshot's content, and its change id with it.

    The images are reverted with the daemon stopped (``qemu-img snapshot -a``), as ESXi drops
    the running delta. The tracking history from before the revert point goes with the daemon's
    bitmaps: a query from an older change id is answered with vCenter's fault, not a guess.
    """
    name, vm = vm_by_moref(vm_moref)
    if on_nfs(vm):
        return answer({"fault": "the lab reverts VMs on its qcow2 datastore only"})
    with locked_state() as state:
        snap = state["snapshots"].get(snap_moref)
        if snap is None:
            return answer({"fault": f"snapshot {snap_moref} does not exist"})
        stop_vm(name)
        for disk in vm["disks"].values():
            subprocess.run(["qemu-img", "snapshot", "-a", snap_moref, disk["image"]], check=True, capture_output=True)
        start_vm(name, vm)
        daemon = Daemon(name)
        for key in vm["disks"]:
            disk = state["disks"].get(f"{name}/{key}")
            if disk and disk["cbt"] and key in snap["ids"]:
                disk["seq"] = disk["history_from"] = int(snap["ids"][key].partition("/")[2])
                daemon.cmd("block-dirty-bitmap-add", node=f"d{key}", name=f"e{disk['seq']}")
    answer({"change_ids": snap["ids"]})


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
    vm = load("lab.json")["vms"][vm_name]
    image = vm["disks"][key]["image"]
    if on_nfs(vm):  # the file the snapshot froze (and the chain below it), as ESXi leaves it on the datastore
        with open(os.path.join(LAB, "state.json")) as handle:
            frozen = json.load(handle)["snapshots"][snap_moref]["frozen"][key]
        spec = {"driver": "vmdk", "file": {"driver": "file", "filename": frozen, "locking": "off"}}
        return ["qemu-nbd", "--read-only", "--persistent", "--shared=16", f"--socket={sock}",
                "json:" + json.dumps(spec)]  # fmt: skip
    # The storage daemon holds the image open for writing: read the (immutable) snapshot without locking.
    return ["qemu-nbd", "--read-only", "--persistent", "--shared=16", "--image-opts",
            f"--load-snapshot=snapshot.name={snap_moref}", f"--socket={sock}",
            f"driver=qcow2,file.driver=file,file.filename={image},file.locking=off"]  # fmt: skip


def write_vddk_conf(lab):
    """What the lab's VDDK knows (vddk/vixDiskLib.c): the vCenter, its credentials and certificate, each disk."""
    os.makedirs(os.path.join(VDDK, "snapshots"), mode=0o700, exist_ok=True)
    lines = [f"server\t{lab['hostname']}", f"user\t{lab['username']}", f"password\t{lab['password']}",
             f"thumbprint\t{lab['thumbprint']}", f"snapshots\t{os.path.join(VDDK, 'snapshots')}",
             f"qemu-nbd\t{shutil.which('qemu-nbd')}"]  # fmt: skip
    for vm in lab["vms"].values():
        lines += [f"disk\t{vm['moref']}\t{disk['file']}\t{disk['image']}" for disk in vm["disks"].values()]
    # The NFS datastore's files are read where it keeps them: the VDDK opens the file the snapshot names.
    for root in sorted({vm["nfs_datastore"] for vm in lab["vms"].values() if on_nfs(vm)}):
        lines.append(f"datastore\t[{os.path.basename(root)}] \t{root}")
    path = os.path.join(VDDK, "lab.conf")
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    os.replace(path + ".tmp", path)


def start():
    """Create missing images, start a storage daemon per VM, tell the lab's VDDK about them."""
    lab = load("lab.json")
    write_vddk_conf(lab)
    for name, vm in lab["vms"].items():
        if vm["disks"]:
            start_vm(name, vm)


def start_vm(name, vm):
    """One VM's storage daemon over its images (created when missing)."""
    qsd_dir = os.path.join(LAB, "qsd", name)
    os.makedirs(qsd_dir, exist_ok=True)
    argv = ["qemu-storage-daemon",
            "--nbd-server", f"addr.type=unix,addr.path={qsd_dir}/nbd.sock,max-connections=32",
            "--chardev", f"socket,id=qmp0,path={qsd_dir}/qmp.sock,server=on,wait=off", "--monitor", "chardev=qmp0",
            "--pidfile", f"{qsd_dir}/qsd.pid"]  # fmt: skip
    for key, disk in vm["disks"].items():
        if on_nfs(vm):
            argv += nfs_disk_argv(key, disk)
            continue
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


def nfs_disk_argv(key, disk):
    """A disk on the NFS datastore (created with its data when missing): its descriptor and flat extent, as ESXi
    keeps a thin disk, under a throttle filter (no limits) that holds the dirty bitmaps and the live export."""
    image = disk["image"]
    with open(image, "rb") as handle:
        made = handle.read(21) == b"# Disk DescriptorFile"
    if not made:  # vcsim left an empty file where vCenter says the disk is
        subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=monolithicFlat", image,
                        str(disk["capacity"])], check=True)  # fmt: skip
        if disk.get("seed_mib"):
            subprocess.run(["qemu-io", "-f", "vmdk", "-c", f"write -P {int(key) % 251} 0 {disk['seed_mib']}M", image],
                           check=True, capture_output=True)  # fmt: skip
    node = {"driver": "vmdk", "node-name": vnode(image), "file": {"driver": "file", "filename": image}}
    return ["--object", f"throttle-group,id=g{key}", "--blockdev", json.dumps(node),
            "--blockdev", f"driver=throttle,node-name=t{key},throttle-group=g{key},file={vnode(image)}",
            "--export", f"type=nbd,id=live-{key},node-name=t{key},name=live-{key},writable=on"]  # fmt: skip


def stop():
    for name in load("lab.json")["vms"]:
        stop_vm(name)


def stop_vm(name):
    pidfile = os.path.join(LAB, "qsd", name, "qsd.pid")
    if not os.path.exists(pidfile):
        return
    with open(pidfile) as handle, suppress(ProcessLookupError, ValueError, FileNotFoundError):
        pid = int(handle.read())
        # A pid file left by an earlier boot names whoever has that pid now (lab/pidfile.sh): only
        # the storage daemon that wrote it is ours to stop.
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            if f"--pidfile\0{pidfile}\0".encode() not in cmdline.read():
                return
        os.kill(pid, 15)
        for _attempt in range(300):  # it must let go of the images before they are touched
            os.kill(pid, 0)
            time.sleep(0.05)


def write(vm_name, key, count, block=None):
    """Write ``count`` random blocks (64 KiB-1 MiB, or ``block`` bytes each) through the live export.

    Prints them as [offset, length]."""
    vm = load("lab.json")["vms"][vm_name]
    handle = nbd.NBD()
    handle.connect_uri(f"nbd+unix:///live-{key}?socket={os.path.join(LAB, 'qsd', vm_name, 'nbd.sock')}")
    rng = random.Random()
    size = vm["disks"][key]["capacity"]
    written = []
    for _block in range(count):
        length = block or rng.choice([64 << 10, 256 << 10, 1 << 20])
        offset = rng.randrange(0, size - length, 64 << 10)
        handle.pwrite(rng.randbytes(length), offset)
        written.append([offset, length])
    handle.flush()
    handle.shutdown()
    answer({"written": written})


def mark(vm_name, key, offset, text, length=str(64 << 10)):
    """Write ``text`` over ``length`` bytes (64 KiB unless told) at ``offset`` through the live export:
    a plaintext to look for later, or data that is there whatever earlier runs left on the disk."""
    offset, length = int(offset), int(length)
    block = (text.encode() * ((1 << 20) // len(text) + 1))[: 1 << 20]
    handle = nbd.NBD()
    handle.connect_uri(f"nbd+unix:///live-{key}?socket={os.path.join(LAB, 'qsd', vm_name, 'nbd.sock')}")
    for pos in range(offset, offset + length, len(block)):
        handle.pwrite(block[: offset + length - pos], pos)
    handle.flush()
    handle.shutdown()
    answer({"marked": [offset, length]})


def zero(vm_name, key, offset, length):
    """Zero an area the way a guest's TRIM does: the clusters become holes (write-zeroes, may punch)."""
    handle = nbd.NBD()
    handle.connect_uri(f"nbd+unix:///live-{key}?socket={os.path.join(LAB, 'qsd', vm_name, 'nbd.sock')}")
    handle.zero(int(length), int(offset))  # without NO_HOLE the server may punch a hole
    handle.flush()
    handle.shutdown()
    answer({"zeroed": [int(offset), int(length)]})


def main(argv):
    command, args = argv[0], argv[1:]
    handlers = {
        "snapshot-create": snapshot_create,
        "snapshot-remove": snapshot_remove,
        "snapshot-remove-all": snapshot_remove_all,
        "query": query,
        "reconfigured": reconfigured,
        "revert": revert,
        "guest-ignores-shutdown": guest_ignores_shutdown,
        "start": start,
        "stop": stop,
        "zero": zero,
        "mark": mark,
    }
    if command == "write":
        return write(args[0], args[1], int(args[2]), int(args[3]) if len(args) > 3 else None)
    if command == "view":
        vm_name, _vm = vm_by_moref(args[0]) if args[0].startswith("vm-") else (args[0], None)
        os.execvp("qemu-nbd", view_argv(vm_name, args[1], args[2], args[3]))
    try:
        handlers[command](*args)
    except RuntimeError as err:
        answer({"fault": str(err)})


if __name__ == "__main__":
    main(sys.argv[1:])
