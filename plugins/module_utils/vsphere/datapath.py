"""Reading one disk of one snapshot over NBD: nbdkit's vddk plugin, started and supervised here.

VDDK (VMware's disk library) is the user's to supply, as virt-v2v and every
peer require; Debian ships no vddk plugin. The password reaches nbdkit through
an inherited pipe (``password=-FD``): never on a command line, where any local
user could read it, and never in a file, which a SIGKILL of the sync would leave
behind.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from contextlib import contextmanager
from typing import Iterator, List, Optional

from ansible_collections.xms.warm_migration.plugins.module_utils.common.waiter import Backoff, wait_for
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere.errors import DataPathError

START_TIMEOUT = 120.0


def nbdkit_argv(client, vm, snapshot, disk, *, socket_path: str, password_fd: int, vddk_libdir: str,
                transports: Optional[str] = None) -> List[str]:  # fmt: skip
    """The nbdkit command line for one disk of one snapshot; it holds no secret."""
    conn = client.conn
    argv = [
        "nbdkit", "--readonly", "--foreground", "--exit-with-parent", "--unix", socket_path,
        "vddk", f"libdir={vddk_libdir}", f"server={conn.hostname}", f"user={conn.username}",
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


def check_vddk(vddk_libdir: str) -> None:
    """Fail early and clearly when nbdkit, its vddk plugin or VDDK itself is missing."""
    nbdkit = shutil.which("nbdkit")
    if not nbdkit:
        raise DataPathError("nbdkit is not installed on the conversion host", hint="Install nbdkit (see bindep.txt)")
    _check_plugin(nbdkit)
    if not os.path.isdir(vddk_libdir):
        raise DataPathError(
            f"VDDK is not at {vddk_libdir}",
            parameter="vddk_libdir",
            hint="Download VMware's VDDK (it is not redistributable), unpack it there, or point vddk_libdir at it",
        )


@functools.cache
def _check_plugin(nbdkit: str) -> None:
    """Asked once per nbdkit and process (a success is kept, a failure raised again): every disk of a
    sync is opened while the others wait, and each ask is a process start."""
    probe = subprocess.run([nbdkit, "vddk", "--dump-plugin"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        raise DataPathError(
            "nbdkit has no vddk plugin on the conversion host",
            hint="Install nbdkit's vddk plugin (e.g. nbdkit-vddk-plugin on RHEL/Fedora); Debian does not ship it",
        )


class DiskServer:
    """nbdkit serving one disk as of a snapshot on a private unix socket.

    Started and then waited for in two steps, so that the disks of one sync start their servers
    side by side: with real VDDK each takes seconds to log in and open its disk, and every
    second one waits for another is a second the snapshot lives longer."""

    def __init__(self, client, vm, snapshot, disk, *, vddk_libdir: str, transports: Optional[str] = None) -> None:
        check_vddk(vddk_libdir)
        self.label = disk.label
        self.workdir = tempfile.mkdtemp(prefix="xms-vddk-")  # 0700: the socket stays private
        self.socket_path = os.path.join(self.workdir, "nbd.sock")
        self.log_path = os.path.join(self.workdir, "nbdkit.log")
        self.proc: Optional[subprocess.Popen] = None
        # The password waits in a pipe nbdkit inherits and reads once at start-up; it never touches a disk.
        read_end, write_end = os.pipe()
        try:
            try:
                os.write(write_end, client.conn.password.encode())  # far below a pipe's buffer: never blocks
            finally:
                # Closed once only: copy threads open files meanwhile, and a second close could hit theirs.
                os.close(write_end)
            argv = nbdkit_argv(client, vm, snapshot, disk, socket_path=self.socket_path, password_fd=read_end,
                               vddk_libdir=vddk_libdir, transports=transports)  # fmt: skip
            with open(self.log_path, "wb") as log:
                self.proc = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True, pass_fds=(read_end,))
        except BaseException:
            self.close()
            raise
        finally:
            os.close(read_end)

    def serving(self) -> str:
        """Wait until nbdkit serves; its NBD URI. Polled often: a connect to a unix socket costs nothing."""
        wait_for(lambda: _serving(self.socket_path, self.proc, self.log_path), timeout=START_TIMEOUT,
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
def open_disk(client, vm, snapshot, disk, *, vddk_libdir: str, transports: Optional[str] = None) -> Iterator[str]:
    """Serve ``disk`` as of ``snapshot`` on a private unix socket; yield its NBD URI; stop it afterwards."""
    server = DiskServer(client, vm, snapshot, disk, vddk_libdir=vddk_libdir, transports=transports)
    try:
        yield server.serving()
    finally:
        server.close()


def _serving(socket_path: str, proc: subprocess.Popen, log_path: str) -> bool:
    if proc.poll() is not None:
        with open(log_path, errors="replace") as log:
            tail = log.read()[-1500:]
        raise DataPathError(f"nbdkit vddk exited ({proc.returncode}): {tail.strip()}",
                            hint="Check VDDK, the thumbprint and that the snapshot still exists")  # fmt: skip
    probe = socket.socket(socket.AF_UNIX)
    try:
        probe.connect(socket_path)
        return True
    except OSError:
        return False
    finally:
        probe.close()
