"""Which QEMU accelerator works on this host: KVM when it really runs a vCPU, TCG otherwise.

An openable ``/dev/kvm`` is not enough: under some nested hypervisors QEMU
aborts as soon as it sets up a ``-cpu host`` vCPU (seen on the CI machines:
"failed to set MSR"). So the probe starts a paused KVM guest and watches it for
two seconds; one that is still alive means KVM works. Both the boot check and
libguestfs (through ``LIBGUESTFS_BACKEND_SETTINGS=force_tcg``) follow the
answer, so nothing crashes on such hosts, only runs slower.
"""

from __future__ import annotations

import functools
import os
import subprocess

QEMU = "qemu-system-x86_64"


@functools.lru_cache(maxsize=1)
def accelerator() -> str:
    """``"kvm"`` or ``"tcg"``; probed once per process."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR)
    except OSError:
        return "tcg"
    os.close(fd)
    argv = [QEMU, "-machine", "pc,accel=kvm", "-cpu", "host", "-m", "64", "-nodefaults", "-display", "none", "-S"]
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except FileNotFoundError:
        return "tcg"
    try:
        proc.wait(timeout=2)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return "kvm"
    return "tcg"
