"""Reading a disk as of a snapshot straight from its NFS datastore: the reader that needs no VDDK (``reader: nfs``).

While a VM has a snapshot, ESXi writes the guest's changes to the snapshot's delta and leaves the
file below it frozen until the snapshot is removed; the snapshot's own disk backing names that
file. A conversion host that mounts the datastore read-only can so read the disk at the snapshot's
point in time with nothing of VMware's: QEMU's vmdk driver reads the descriptor, its flat extent
and the deltas of snapshots taken before ours (vmfsSparse, SEsparse), and qemu-nbd serves them
read-only over NBD. The changed areas still come from vSphere's API (CBT), which never needed
VDDK, so the engine, its plans and its journals are the same as with the VDDK readers.

The datastore is reached where the operator mounted it (``nfs_mounts``), where the host already
has its export mounted, or else at a read-only mount of the export vSphere reports (``info.nas``)
made here under the state directory. The mount stays for the next sync: it is read-only and holds
nothing of the run.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Tuple

from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere.errors import DataPathError
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere.inventory import properties

NFS_TYPES = {"NFS": "3", "NFS41": "4.1"}  # a datastore's summary.type, and the NFS version ESXi mounts it with
MOUNT_TIMEOUT_S = 60.0
_VDDK_WAY_OUT = "Use a VDDK reader for this VM (reader: auto or xms, with VMware's VDDK in vddk_libdir)"


@dataclass(frozen=True)
class NfsDatastore:
    """Where an NFS datastore's files are served from, as vSphere reports it (``info.nas``)."""

    name: str
    server: str
    export: str
    version: str  # "3" or "4.1"

    @property
    def source(self) -> str:
        """The export as mount(8) and /proc/mounts write it."""
        return f"{self.server}:{self.export}"


def split_datastore_path(file_name: str) -> Tuple[str, str]:
    """``[datastore] dir/disk.vmdk`` as (datastore, dir/disk.vmdk)."""
    found = re.fullmatch(r"\[([^\]]+)\]\s*(.+)", file_name or "")
    if not found:
        raise DataPathError(f"'{file_name}' is not a datastore path ([datastore] dir/file.vmdk)")
    return found.group(1), found.group(2)


def datastores(client, refs: List[object]) -> Dict[str, Optional[NfsDatastore]]:
    """Each datastore by name: its NFS export, or None for one that is not NFS (VMFS, vSAN, vVols)."""
    found: Dict[str, Optional[NfsDatastore]] = {}
    for ref in refs:
        props = properties(client, ref, ["name", "summary.type", "info"])
        version = NFS_TYPES.get(props.get("summary.type") or "")
        nas = getattr(props.get("info"), "nas", None)
        if version is None or nas is None:
            found[props["name"]] = None
            continue
        server = (list(getattr(nas, "remoteHostNames", None) or []) or [nas.remoteHost])[0]
        found[props["name"]] = NfsDatastore(props["name"], server, nas.remotePath, version)
    return found


class VmDatastores:
    """The datastores a VM's files are on, asked of vSphere once, and only when a question needs them."""

    def __init__(self, client, vm) -> None:
        self.client, self.vm = client, vm

    @functools.cached_property
    def known(self) -> Dict[str, Optional[NfsDatastore]]:
        return datastores(self.client, properties(self.client, self.vm, ["datastore"]).get("datastore") or [])

    def all_nfs(self, file_names: List[str]) -> bool:
        """Whether every one of the disk files is on an NFS datastore."""
        return bool(file_names) and all(self.known.get(split_datastore_path(name)[0]) for name in file_names)

    def local_path(self, file_name: str, *, mounts: Mapping[str, str], state_dir: str) -> str:
        """Where ``file_name`` (``[datastore] dir/disk.vmdk``) is on this host, its datastore mounted (see
        ``local_path``)."""
        return local_path(file_name, self.known, mounts=mounts, state_dir=state_dir)


def local_path(file_name: str, known: Mapping[str, Optional[NfsDatastore]], *, mounts: Mapping[str, str],
               state_dir: str) -> str:  # fmt: skip
    """The local path of ``file_name`` on its mounted datastore; DataPathError, naming the parameter, when
    the datastore is not NFS, cannot be mounted or does not hold the file."""
    name, relative = split_datastore_path(file_name)
    datastore = known.get(name)
    if datastore is None:
        raise DataPathError(f"the nfs reader reads NFS datastores only, and '{file_name}' is on datastore '{name}',"
                            " which is not NFS", parameter="reader", hint=_VDDK_WAY_OUT)  # fmt: skip
    root = mount_point(datastore, mounts, state_dir)
    path = os.path.join(root, relative)
    if not os.path.isfile(path):
        raise DataPathError(f"datastore '{name}' at {root} has no file {relative}: that directory is not the"
                            f" export {datastore.source}", parameter="nfs_mounts",
                            hint=f"Mount {datastore.source} read-only there, or name where it is mounted")  # fmt: skip
    return path


def mount_point(datastore: NfsDatastore, mounts: Mapping[str, str], state_dir: str) -> str:
    """Where ``datastore`` is mounted on this host: where nfs_mounts says, where its export is mounted
    already, or a read-only mount made now under ``state_dir``."""
    named = mounts.get(datastore.name)
    if named:
        if not os.path.isabs(named):
            raise DataPathError(f"nfs_mounts names '{named}' for datastore '{datastore.name}', not an absolute path",
                                parameter="nfs_mounts", hint="Name the mount point by its absolute path")  # fmt: skip
        if not os.path.isdir(named):
            raise DataPathError(f"nfs_mounts names {named} for datastore '{datastore.name}', and it is not a"
                                " directory", parameter="nfs_mounts",
                                hint=f"Mount {datastore.source} read-only there first")  # fmt: skip
        return named
    mounted = mounted_at(datastore.source)
    if mounted:
        return mounted
    target = os.path.join(state_dir, "datastores", re.sub(r"[^A-Za-z0-9._-]", "_", datastore.name))
    os.makedirs(target, mode=0o700, exist_ok=True)
    options = f"ro,vers={datastore.version},hard,nosuid,nodev,noexec"
    try:
        done = subprocess.run(["mount", "-t", "nfs", "-o", options, datastore.source, target], capture_output=True,
                              text=True, timeout=MOUNT_TIMEOUT_S, check=False)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as err:
        done = subprocess.CompletedProcess([], 1, "", str(err))
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise DataPathError(f"could not mount datastore '{datastore.name}' ({datastore.source}, NFS"
                            f" {datastore.version}) read-only at {target}: {said[0]}", parameter="nfs_mounts",
                            hint="Let this host mount the export read-only (the NFS client, nfs-common or nfs-utils,"
                            " and the server's export to this host's address), or mount it yourself and name the"
                            f" mount point in nfs_mounts; or: {_VDDK_WAY_OUT}")  # fmt: skip
    return target


def mounted_at(source: str) -> Optional[str]:
    """Where the NFS export ``source`` (server:/export) is mounted on this host, if it is."""
    with open("/proc/self/mounts") as table:
        for line in table:
            fields = line.split()
            if len(fields) > 2 and fields[2].startswith("nfs") and fields[0].rstrip("/") == source.rstrip("/"):
                return fields[1].replace("\\040", " ")
    return None


def qemu_nbd_argv(path: str, socket_path: str) -> List[str]:
    """qemu-nbd serving ``path`` (a vmdk descriptor, and the chain below it) read-only on ``socket_path``.

    Locking is off: ESXi takes no POSIX locks, and the file, frozen under the snapshot, is only read."""
    image = {"driver": "vmdk", "file": {"driver": "file", "filename": path, "locking": "off"}}
    return ["qemu-nbd", "--read-only", "--persistent", "--shared=16", f"--socket={socket_path}",
            "json:" + json.dumps(image)]  # fmt: skip
