"""Reading one disk of one snapshot over NBD: nbdkit with a VDDK reader, started and supervised here.

VDDK (VMware's disk library) is the user's to supply, as virt-v2v and every peer require. Two
readers take the same parameters: nbdkit's own ``vddk`` plugin where the host has one (RHEL's
nbdkit-vddk-plugin), and the collection's (vddk_reader.py, in nbdkit's Python host), which is
what Debian and Ubuntu hosts get: they ship no vddk plugin. ``vddk_reader: auto`` picks the first
of the two the host has. The password reaches nbdkit through an inherited pipe (``password=-FD``):
never on a command line, where any local user could read it, and never in a file, which a SIGKILL
of the sync would leave behind.
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
from typing import Iterator, List, Optional, Sequence

from ansible_collections.xms.warm_migration.plugins.module_utils.common.waiter import Backoff, wait_for
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere import vddk_reader
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere.errors import DataPathError

START_TIMEOUT = 120.0
READER_FILE = "xms_vddk_reader.py"  # the collection's reader, copied into a disk server's private directory


class Reader(str, Enum):
    """Which nbdkit plugin reads the disk through VDDK (option ``vddk_reader``)."""

    AUTO = "auto"
    NBDKIT_VDDK = "nbdkit-vddk"  # nbdkit's own C plugin
    XMS = "xms"  # the collection's, in nbdkit's Python host


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


def check_vddk(vddk_libdir: str, reader: Reader = Reader.AUTO) -> ReaderChoice:
    """The reader this host runs for ``reader`` and why; DataPathError (naming the parameter) when nbdkit,
    the reader or VDDK itself is missing."""
    nbdkit = shutil.which("nbdkit")
    if not nbdkit:
        raise DataPathError("nbdkit is not installed on the conversion host", hint="Install nbdkit (see bindep.txt)")
    if not os.path.isdir(vddk_libdir):
        raise DataPathError(f"VDDK is not at {vddk_libdir}", parameter="vddk_libdir", hint=_VDDK_HINT)
    has_vddk, has_python = _has_plugin(nbdkit, "vddk"), _has_plugin(nbdkit, "python")
    if reader is Reader.NBDKIT_VDDK and not has_vddk:
        raise DataPathError("nbdkit has no vddk plugin on the conversion host", parameter="vddk_reader",
                            hint="Install nbdkit's vddk plugin (nbdkit-vddk-plugin on RHEL and Fedora; Debian and"
                            " Ubuntu do not ship it), or use vddk_reader: auto or xms")  # fmt: skip
    if reader is Reader.XMS and not has_python:
        raise DataPathError("nbdkit has no python plugin on the conversion host", parameter="vddk_reader",
                            hint="Install nbdkit's Python plugin host (nbdkit-plugin-python on Debian and Ubuntu,"
                            " nbdkit-python-plugin on RHEL), or use vddk_reader: nbdkit-vddk")  # fmt: skip
    if reader is Reader.AUTO and not (has_vddk or has_python):
        raise DataPathError("nbdkit has neither a vddk nor a python plugin on the conversion host",
                            parameter="vddk_reader", hint="Install nbdkit-plugin-python (Debian, Ubuntu) or"
                            " nbdkit-vddk-plugin (RHEL, Fedora)")  # fmt: skip
    if reader is Reader.NBDKIT_VDDK or (reader is Reader.AUTO and has_vddk):
        return ReaderChoice(Reader.NBDKIT_VDDK, "nbdkit's own vddk plugin" + (
            " is installed" if reader is Reader.AUTO else " (vddk_reader: nbdkit-vddk)"))  # fmt: skip
    try:
        vddk_reader.library_path(vddk_libdir)
    except ValueError as err:
        raise DataPathError(str(err), parameter="vddk_libdir", hint=_VDDK_HINT) from None
    return ReaderChoice(Reader.XMS, "the collection's reader" + (
        " (this host's nbdkit has no vddk plugin)" if reader is Reader.AUTO else " (vddk_reader: xms)"))  # fmt: skip


_VDDK_HINT = (
    "Unpack VMware's VDDK (not redistributable; see docs/conversion-host.md) so that"
    " <vddk_libdir>/lib64/libvixDiskLib.so.N exists, or point vddk_libdir at it"
)


@functools.cache
def _has_plugin(nbdkit: str, plugin: str) -> bool:
    """Asked once per nbdkit, plugin and process: every disk of a sync is opened while the others
    wait, and each ask is a process start."""
    probe = subprocess.run([nbdkit, plugin, "--dump-plugin"], capture_output=True, text=True, check=False)
    return probe.returncode == 0


class DiskServer:
    """nbdkit serving one disk as of a snapshot on a private unix socket.

    Started and then waited for in two steps, so that the disks of one sync start their servers
    side by side: with real VDDK each takes seconds to log in and open its disk, and every
    second one waits for another is a second the snapshot lives longer."""

    def __init__(self, client, vm, snapshot, disk, *, vddk_libdir: str, transports: Optional[str] = None,
                 reader: Reader = Reader.AUTO) -> None:  # fmt: skip
        self.choice = check_vddk(vddk_libdir, reader)
        self.label = disk.label
        self.workdir = tempfile.mkdtemp(prefix="xms-vddk-")  # 0700: the socket stays private
        self.socket_path = os.path.join(self.workdir, "nbd.sock")
        self.log_path = os.path.join(self.workdir, "nbdkit.log")
        self.proc: Optional[subprocess.Popen] = None
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
            with open(self.log_path, "wb") as log:
                self.proc = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True, pass_fds=(read_end,))
        except BaseException:
            self.close()
            raise
        finally:
            os.close(read_end)

    def serving(self) -> str:
        """Wait until nbdkit serves; its NBD URI. Polled often: a connect to a unix socket costs nothing."""
        wait_for(lambda: _serving(self.socket_path, self.proc, self.log_path, self.choice), timeout=START_TIMEOUT,
                 what=f"nbdkit to serve {self.label}", backoff=Backoff(initial=0.02, maximum=0.1))  # fmt: skip
        return f"nbd+unix:///?socket={self.socket_path}"

    def close(self) -> None:
        """Stop nbdkit (if it runs) and remove its directory."""
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
              reader: Reader = Reader.AUTO) -> Iterator[str]:  # fmt: skip
    """Serve ``disk`` as of ``snapshot`` on a private unix socket; yield its NBD URI; stop it afterwards."""
    server = DiskServer(client, vm, snapshot, disk, vddk_libdir=vddk_libdir, transports=transports, reader=reader)
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
