"""Mutual exclusion between two syncs (or a sync and a cutover) of one migration.

Two layers, because each covers what the other cannot:
- an ``flock`` on a file in the conversion host's state directory: atomic, and
  released by the kernel when the process dies, so a crashed sync never blocks
  the next one on the same host (the usual race: an AWX schedule and a manual
  run on one conversion host);
- the record's ``owner``/``heartbeat`` fields: seen from every host (ownership.py
  decides when another host's owner has gone quiet for good).
"""

from __future__ import annotations

import fcntl
import os
import socket
from contextlib import contextmanager
from typing import Iterator

from ansible_collections.xms.warm_migration.plugins.module_utils.migration.errors import (
    MigrationBusyError,
    StateDirError,
)

_BOOT_ID = "/proc/sys/kernel/random/boot_id"


def boot_id() -> str:
    """This boot of this machine: random per boot, so two clones of one host never share it."""
    try:
        with open(_BOOT_ID) as handle:
            return handle.read().strip().replace("-", "")[:12]
    except OSError:  # not Linux: the hostname and pid alone, as before
        return ""


def owner_id() -> str:
    """Who holds a migration: ``host:pid:boot``, written into the record while it holds it."""
    return f"{socket.gethostname()[:200]}:{os.getpid()}:{boot_id()}"  # a record value holds 255 characters


def on_this_host(owner: str) -> bool:
    """Whether ``owner`` ran in this boot of this host, where the flock alone decides.

    Both must match: cloned conversion hosts share a hostname but not a boot id, and hosts that
    share a kernel (containers, network namespaces) share a boot id but not a hostname. An owner
    written before boot ids were recorded (``host:pid``) is judged by its hostname alone."""
    host, _pid, boot = [*owner.split(":"), "", ""][:3]
    return host == socket.gethostname()[:200] and (not boot or boot == boot_id())


@contextmanager
def host_lock(state_dir: str, migration_id: str) -> Iterator[None]:
    """Hold the conversion host's lock of ``migration_id`` or raise MigrationBusyError at once."""
    path = os.path.join(state_dir, f"{migration_id}.lock")
    try:
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as err:  # checked first: nothing has changed yet on either side
        raise StateDirError(
            f"the state directory {state_dir} cannot hold the migration's lock ({err.strerror})",
            parameter="state_dir",
            hint="Point state_dir at a writable local directory of the conversion host",
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 256, 0).decode(errors="replace").strip() or "another process"
            raise MigrationBusyError(
                f"another run of migration {migration_id} (a sync, cutover, seed export or import, or test)"
                f" is running on this host ({holder})",
                hint="Wait for it to finish (see migration_info for its progress), then run again",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, owner_id().encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the flock
