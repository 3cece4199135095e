"""Reading one disk of one snapshot over NBD: a reader process started and supervised here.

VDDK (VMware's disk library) is the user's to supply, as virt-v2v and every peer require. Two
readers go through it and take the same parameters: nbdkit's own ``vddk`` plugin where the host
has one (RHEL's nbdkit-vddk-plugin), and the collection's (vddk_reader.py, in nbdkit's Python
host), which is what Debian and Ubuntu hosts get: they ship no vddk plugin. The password reaches
nbdkit through an inherited pipe (``password=-FD``): never on a command line, where any local user
could read it, and never in a file, which a SIGKILL of the sync would leave behind. A third reader
needs no VDDK: for disks on NFS datastores, qemu-nbd serves the file the snapshot froze, read from
the datastore mounted on this host (nfs_reader.py). ``reader: auto`` takes the first VDDK reader the
host has, and the NFS reader when no VDDK is there and every disk of the VM is on NFS.
"""

from __future__ import annotations

import functools
import inspect
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from typing import Callable, Iterator, List, Mapping, Optional, Sequence

from ansible_collections.xms.warm_migration.plugins.module_utils.common.waiter import Backoff, wait_for
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere import nfs_reader, vddk_reader
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere.errors import DataPathError

START_TIMEOUT = 120.0
STATE_DIR = "/var/lib/xms-warm-migration"  # the data path's default state_dir (argument_spec)
READER_FILE = "xms_vddk_reader.py"  # the collection's reader, copied into a disk server's private directory


class Reader(str, Enum):
    """What reads the source disks (option ``reader``)."""

    AUTO = "auto"
    NBDKIT_VDDK = "nbdkit-vddk"  # nbdkit's own C plugin, through VDDK
    XMS = "xms"  # the collection's, in nbdkit's Python host, through VDDK
    NFS = "nfs"  # qemu-nbd on the frozen file of an NFS datastore: no VDDK


@dataclass(frozen=True)
class ReaderChoice:
    """The reader a disk server runs, and why that one."""

    reader: Reader
    why: str

    def plugin(self, workdir: str) -> List[str]:
        """The plugin part of nbdkit's command line."""
        return ["vddk"] if self.reader is Reader.NBDKIT_VDDK else ["python", os.path.join(workdir, READER_FILE)]


def nbdkit_argv(client, vm, snapshot, disk, *, socket_path: str, password_fd: int, vddk_libdir: str,
                transports: Optional[str] = None, plugin: Sequence[str] = ("vddk",)) -> List[str]:  # fmt: skip
    """The nbdkit command line for one disk of one snapshot, the same for both readers; it holds no secret."""
    conn = client.conn
    argv = [
        "nbdkit", "--readonly", "--foreground", "--exit-with-parent", "--unix", socket_path,
        *plugin, f"libdir={vddk_libdir}", f"server={conn.hostname}", f"user={conn.username}",
        f"password=-{password_fd}", f"vm=moref={vm._moId}", f"snapshot={snapshot.moref}",
        f"file={snapshot.backing_files.get(disk.key) or disk.backing_file}",
    ]  # fmt: skip
    if conn.port != 443:
        argv.append(f"port={conn.port}")
    if client.thumbprint:
        argv.append(f"thumbprint={client.thumbprint}")
    if transports:
        argv.append(f"transports={transports}")
    return argv


def uses_nfs(vddk_libdir: str, reader: Reader, on_nfs: Callable[[], bool]) -> bool:
    """Whether ``reader`` means the NFS reader on this host: asked for, or ``auto`` with no VDDK here and
    ``on_nfs()`` (every disk of the VM on an NFS datastore), asked only then: it costs vSphere calls."""
    return reader is Reader.NFS or (reader is Reader.AUTO and not os.path.isdir(vddk_libdir) and on_nfs())


def choose_reader(vddk_libdir: str, reader: Reader, on_nfs: Callable[[], bool]) -> ReaderChoice:
    """The reader this host runs for ``reader`` and why (see ``uses_nfs`` and ``check_vddk``)."""
    if uses_nfs(vddk_libdir, reader, on_nfs):
        why = "reader: nfs" if reader is Reader.NFS else f"no VDDK in {vddk_libdir}, every disk on NFS datastores"
        return ReaderChoice(Reader.NFS, f"the NFS reader ({why})")
    return check_vddk(vddk_libdir, reader)


def nfs_files(client, vm, files: List[str], *, vddk_libdir: str, reader: Reader, nfs_mounts: Mapping[str, str],
              state_dir: str) -> Optional[List[str]]:  # fmt: skip
    """With the NFS reader for this VM, where each of its disk ``files`` is on this host (mounting the datastores
    that need it; DataPathError when one cannot be reached); None when a VDDK reader reads it."""
    stores = nfs_reader.VmDatastores(client, vm)
    if not uses_nfs(vddk_libdir, reader, lambda: stores.all_nfs(files)):
        return None
    return [stores.local_path(name, mounts=nfs_mounts, state_dir=state_dir) for name in files]


def check_vddk(vddk_libdir: str, reader: Reader = Reader.AUTO) -> ReaderChoice:
    """The VDDK reader this host runs for ``reader`` and why; DataPathError (naming the parameter) when nbdkit,
    the reader or VDDK itself is missing."""
    nbdkit = shutil.which("nbdkit")
    if not nbdkit:
        raise DataPathError("nbdkit is not installed on the conversion host", hint="Install nbdkit (see bindep.txt)")
    if not os.path.isdir(vddk_libdir):
        raise DataPathError(f"VDDK is not at {vddk_libdir}", parameter="vddk_libdir", hint=_VDDK_HINT)
    has_vddk, has_python = _has_plugin(nbdkit, "vddk"), _has_plugin(nbdkit, "python")
    if reader is Reader.NBDKIT_VDDK and not has_vddk:
        raise DataPathError("nbdkit has no vddk plugin on the conversion host", parameter="reader",
                            hint="Install nbdkit's vddk plugin (nbdkit-vddk-plugin on RHEL and Fedora; Debian and"
                            " Ubuntu do not ship it), or use reader: auto or xms")  # fmt: skip
    if reader is Reader.XMS and not has_python:
        raise DataPathError("nbdkit has no python plugin on the conversion host", parameter="reader",
                            hint="Install nbdkit's Python plugin host (nbdkit-plugin-python on Debian and Ubuntu,"
                            " nbdkit-python-plugin on RHEL), or use reader: nbdkit-vddk")  # fmt: skip
    if reader is Reader.AUTO and not (has_vddk or has_python):
        raise DataPathError("nbdkit has neither a vddk nor a python plugin on the conversion host",
                            parameter="reader", hint="Install nbdkit-plugin-python (Debian, Ubuntu) or"
                            " nbdkit-vddk-plugin (RHEL, Fedora)")  # fmt: skip
    if reader is Reader.NBDKIT_VDDK or (reader is Reader.AUTO and has_vddk):
        return ReaderChoice(Reader.NBDKIT_VDDK, "nbdkit's own vddk plugin" + (
            " is installed" if reader is Reader.AUTO else " (reader: nbdkit-vddk)"))  # fmt: skip
    try:
        vddk_reader.library_path(vddk_libdir)
    except ValueError as err:
        raise DataPathError(str(err), parameter="vddk_libdir", hint=_VDDK_HINT) from None
    return ReaderChoice(Reader.XMS, "the collection's reader" + (
        " (this host's nbdkit has no vddk plugin)" if reader is Reader.AUTO else " (reader: xms)"))  # fmt: skip


_VDDK_HINT = (
    "Unpack VMware's VDDK (not redistributable; see docs/conversion-host.md) so that"
    " <vddk_libdir>/lib64/libvixDiskLib.so.N exists, or point vddk_libdir at it; a VM whose disks are all on"
    " NFS datastores needs no VDDK (reader: nfs)"
)


@functools.cache
def _has_plugin(nbdkit: str, plugin: str) -> bool:
    """Asked once per nbdkit, plugin and process: every disk of a sync is opened while the others
    wait, and each ask is a process start."""
    probe = subprocess.run([nbdkit, plugin, "--dump-plugin"], capture_output=True, text=True, check=False)
    return probe.returncode == 0


class DiskServer:
    """A reader serving one disk as of a snapshot on a private unix socket: nbdkit with a VDDK reader,
    or qemu-nbd on the file the snapshot froze on an NFS datastore.

    Started and then waited for in two steps, so that the disks of one sync start their servers
    side by side: with real VDDK each takes seconds to log in and open its disk, and every
    second one waits for another is a second the snapshot lives longer."""

    def __init__(self, client, vm, snapshot, disk, *, vddk_libdir: str, transports: Optional[str] = None,
                 reader: Reader = Reader.AUTO, nfs_mounts: Optional[Mapping[str, str]] = None,
                 state_dir: str = STATE_DIR) -> None:  # fmt: skip
        stores = nfs_reader.VmDatastores(client, vm)
        self.choice = choose_reader(vddk_libdir, reader, lambda: stores.all_nfs(list(snapshot.backing_files.values())))
        self.label = disk.label
        self.workdir = tempfile.mkdtemp(prefix="xms-reader-")  # 0700: the socket stays private
        self.socket_path = os.path.join(self.workdir, "nbd.sock")
        self.log_path = os.path.join(self.workdir, "reader.log")
        self.proc: Optional[subprocess.Popen] = None
        try:
            if self.choice.reader is Reader.NFS:
                path = stores.local_path(snapshot.backing_files.get(disk.key) or disk.backing_file,
                                         mounts=nfs_mounts or {}, state_dir=state_dir)  # fmt: skip
                self._spawn(nfs_reader.qemu_nbd_argv(path, self.socket_path))
            else:
                self._start_nbdkit(client, vm, snapshot, disk, vddk_libdir, transports)
        except BaseException:
            self.close()
            raise

    def _start_nbdkit(self, client, vm, snapshot, disk, vddk_libdir: str, transports: Optional[str]) -> None:
        if self.choice.reader is Reader.XMS:
            fd = os.open(os.path.join(self.workdir, READER_FILE), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as copy:
                copy.write(inspect.getsource(vddk_reader))
        # The password waits in a pipe nbdkit inherits and reads once at start-up; it never touches a disk.
        read_end, write_end = os.pipe()
        try:
            try:
                os.write(write_end, client.conn.password.encode())  # far below a pipe's buffer: never blocks
            finally:
                # Closed once only: copy threads open files meanwhile, and a second close could hit theirs.
                os.close(write_end)
            argv = nbdkit_argv(client, vm, snapshot, disk, socket_path=self.socket_path, password_fd=read_end,
                               vddk_libdir=vddk_libdir, transports=transports,
                               plugin=self.choice.plugin(self.workdir))  # fmt: skip
            self._spawn(argv, pass_fds=(read_end,))
        finally:
            os.close(read_end)

    def _spawn(self, argv: List[str], pass_fds: Sequence[int] = ()) -> None:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True, pass_fds=pass_fds)

    def serving(self) -> str:
        """Wait until the reader serves; its NBD URI. Polled often: a connect to a unix socket costs nothing."""
        wait_for(lambda: _serving(self.socket_path, self.proc, self.log_path, self.choice), timeout=START_TIMEOUT,
                 what=f"the reader to serve {self.label}", backoff=Backoff(initial=0.02, maximum=0.1))  # fmt: skip
        return f"nbd+unix:///?socket={self.socket_path}"

    def close(self) -> None:
        """Stop the reader (if it runs) and remove its directory."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)


@contextmanager
def open_disk(client, vm, snapshot, disk, *, vddk_libdir: str, transports: Optional[str] = None,
              reader: Reader = Reader.AUTO, nfs_mounts: Optional[Mapping[str, str]] = None,
              state_dir: str = STATE_DIR) -> Iterator[str]:  # fmt: skip
    """Serve ``disk`` as of ``snapshot`` on a private unix socket; yield its NBD URI; stop it afterwards."""
    server = DiskServer(client, vm, snapshot, disk, vddk_libdir=vddk_libdir, transports=transports, reader=reader,
                        nfs_mounts=nfs_mounts, state_dir=state_dir)  # fmt: skip
    try:
        yield server.serving()
    finally:
        server.close()


# What VDDK's refusals mean here (VIX codes, as both readers log them): the parameter to look at and what to do.
_VIX_FAULTS = {
    3014: ("password", "VDDK could not log in to vCenter as username with this password: check both"),
    35: ("password", "VDDK could not log in to vCenter as username with this password: check both"),
    30201: (
        "hostname",
        "The certificate VDDK was shown is not the one this run's API session saw: something"
        " between this host and vCenter answers in its place, or the certificate changed meanwhile",
    ),
    14009: (
        "hostname",
        "vCenter or the VM's ESXi host refused VDDK's connection: open port 443 to vCenter and 902"
        " to every ESXi host from the conversion host",
    ),
    4000: (None, "vCenter does not know the VM any more (removed, or moved to another vCenter)"),
    13003: (None, "The sync's snapshot is gone (someone removed it, or consolidated the VM): run the sync again"),
    4: (None, "The snapshot has no such disk file: the VM's disks changed meanwhile; run the sync again"),
    13: (
        None,
        "The vCenter user may not read the VM's disks: it needs the privilege VirtualMachine.Provisioning"
        ".DiskRandomRead (see docs/conversion-host.md)",
    ),
}


def _serving(socket_path: str, proc: subprocess.Popen, log_path: str, choice: ReaderChoice) -> bool:
    if proc.poll() is not None:
        with open(log_path, errors="replace") as log:
            tail = log.read()[-1500:].strip()
        if choice.reader is Reader.NFS:
            raise DataPathError(f"qemu-nbd could not read the snapshot's disk file ({proc.returncode}): {tail}",
                                parameter="reader", hint="QEMU reads flat vmdk files and the vmfsSparse and"
                                " SEsparse deltas below them; for a chain it cannot read, use a VDDK reader"
                                " (reader: auto or xms, with VMware's VDDK in vddk_libdir)")  # fmt: skip
        code = re.findall(r"VIX error (\d+)", tail)
        parameter, hint = _VIX_FAULTS.get(int(code[-1]) if code else -1, (None, ""))
        raise DataPathError(f"nbdkit with {choice.why} exited ({proc.returncode}) before serving: {tail}",
                            parameter=parameter,
                            hint=hint or "Check VDDK, the thumbprint and that the snapshot still exists")  # fmt: skip
    probe = socket.socket(socket.AF_UNIX)
    try:
        probe.connect(socket_path)
        return True
    except OSError:
        return False
    finally:
        probe.close()
