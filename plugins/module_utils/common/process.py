"""Tying a helper process's life to the process that started it.

Nothing the collection starts may outlive it (a virt-v2v or a QEMU left running would go on writing
or reading the volumes while a rerun converts again or a rollback's resync copies). Ansible's async
timeout and a kill -9 end only the module's process: Linux's parent-death signal, set in the child
between fork and exec, reaches the child even then. It fires when the *thread* that started the
child ends, so a caller starts such a child from a thread that lives as long as the child's use.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
from typing import Callable

PR_SET_PDEATHSIG = 1


def dies_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None]:
    """A ``preexec_fn`` for ``subprocess.Popen``: the child gets ``sig`` when its parent dies.

    A parent already gone by then (the child was adopted before the signal was armed) ends the child
    at once. Children of the child (a libguestfs appliance, say) are the child's own to end: virt-v2v
    and libguestfs end theirs when it dies."""
    parent = os.getpid()  # evaluated in the parent, before the fork

    def arm() -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, sig)
        if os.getppid() != parent:
            os._exit(1)

    return arm
