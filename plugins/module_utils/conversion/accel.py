"""Which QEMU accelerator works on this host: KVM when it really runs a Linux kernel, TCG otherwise.

An openable ``/dev/kvm`` is not enough, and neither is a vCPU that starts: under
some nested hypervisors QEMU aborts as soon as it sets up a ``-cpu host`` vCPU
("failed to set MSR"), and on others a KVM guest runs a boot sector but a Linux
kernel hangs silently, forever, with no output (seen on a CI machine: the lab's
libguestfs appliance hung for ten minutes). So the probe boots the host's newest
kernel with no root file system and ``panic=-1``: where KVM works it panics and
QEMU exits within a second or two; where it does not, the probe gives up after
``PROBE_TIMEOUT_S`` and TCG is used. No kernel to boot: TCG (slower, never hangs).
Both the boot check and libguestfs (``LIBGUESTFS_BACKEND_SETTINGS=force_tcg``)
follow the answer; ``lab/guest/build.sh`` runs this file for the same answer.
"""

from __future__ import annotations

import functools
import glob
import os
import subprocess
import sys

QEMU = "qemu-system-x86_64"
KVM_DEVICE = "/dev/kvm"
KERNELS = "/boot/vmlinuz-*"
PROBE_TIMEOUT_S = 20.0


@functools.lru_cache(maxsize=1)
def accelerator() -> str:
    """``"kvm"`` or ``"tcg"``; probed once per process."""
    try:
        fd = os.open(KVM_DEVICE, os.O_RDWR)
    except OSError:
        return "tcg"
    os.close(fd)
    kernels = sorted(glob.glob(KERNELS))
    if not kernels:
        return "tcg"
    argv = [QEMU, "-machine", "pc,accel=kvm", "-cpu", "max", "-m", "256", "-nodefaults", "-display", "none",
            "-no-reboot", "-serial", "null", "-kernel", kernels[-1],
            "-append", "console=ttyS0 panic=-1 quiet"]  # fmt: skip
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except FileNotFoundError:
        return "tcg"
    try:
        proc.wait(timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return "tcg"
    return "kvm" if proc.returncode == 0 else "tcg"


if __name__ == "__main__":
    sys.stdout.write(accelerator() + "\n")
