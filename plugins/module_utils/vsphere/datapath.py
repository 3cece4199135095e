"""Reading one disk of one snapshot over NBD: nbdkit's vddk plugin, started and supervised here.

VDDK (VMware's disk library) is the user's to supply, as virt-v2v and every
peer require; Debian ships no vddk plugin. The password reaches nbdkit through
an inherited pipe (``password=-FD``): never on a command line, where any local
user could read it, and never in a file, which a SIGKILL of the sync would leave
behind.
"""

from __future__ import annotations

import contextlib
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
    if not shutil.which("nbdkit"):
        raise DataPathError("nbdkit is not installed on the conversion host", hint="Install nbdkit (see bindep.txt)")
    probe = subprocess.run(["nbdkit", "vddk", "--dump-plugin"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        raise DataPathError(
            "nbdkit has no vddk plugin on the conversion host",
            hint="Install nbdkit's vddk plugin (e.g. nbdkit-vddk-plugin on RHEL/Fedora); Debian does not ship it",
        )
    if not os.path.isdir(vddk_libdir):
        raise DataPathError(
            f"VDDK is not at {vddk_libdir}",
            parameter="vddk_libdir",
            hint="Download VMware's VDDK (it is not redistributable), unpack it there, or point vddk_libdir at it",
        )


@contextmanager
def open_disk(client, vm, snapshot, disk, *, vddk_libdir: str, transports: Optional[str] = None) -> Iterator[str]:
    """Serve ``disk`` as of ``snapshot`` on a private unix socket; yield its NBD URI; stop it afterwards."""
    check_vddk(vddk_libdir)
    workdir = tempfile.mkdtemp(prefix="xms-vddk-")  # 0700: the socket stays private
    socket_path = os.path.join(workdir, "nbd.sock")
    log_path = os.path.join(workdir, "nbdkit.log")
    # The password waits in a pipe nbdkit inherits and reads once at start-up; it never touches a disk.
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, client.conn.password.encode())  # far below a pipe's buffer: never blocks
        os.close(write_end)
        argv = nbdkit_argv(client, vm, snapshot, disk, socket_path=socket_path, password_fd=read_end,
                           vddk_libdir=vddk_libdir, transports=transports)  # fmt: skip
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True, pass_fds=(read_end,))
    finally:
        os.close(read_end)
        with contextlib.suppress(OSError):
            os.close(write_end)
    try:
        wait_for(lambda: _serving(socket_path, proc, log_path), timeout=START_TIMEOUT,
                 what=f"nbdkit to serve {disk.label}", backoff=Backoff(initial=0.05, maximum=1.0))  # fmt: skip
        yield f"nbd+unix:///?socket={socket_path}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


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
