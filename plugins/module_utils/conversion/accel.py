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
follow the answer; ``lab/guest/build.sh`` runs this file for the same answer (so it imports
nothing of the collection).

RHEL installs QEMU as ``/usr/libexec/qemu-kvm``, built without TCG, and ``virt-v2v-in-place``
under ``/usr/libexec`` too: :func:`program` finds both, and :func:`check_usable` refuses, before
anything changes, a host where KVM does not work and QEMU has no TCG to fall back on.
"""

from __future__ import annotations

import functools
import glob
import os
import shutil
import subprocess
import sys
from typing import Optional

QEMU = "qemu-system-x86_64"
LIBEXEC = "/usr/libexec"
QEMU_LIBEXEC = "qemu-kvm"  # RHEL's QEMU: KVM only
KVM_DEVICE = "/dev/kvm"
KERNELS = "/boot/vmlinuz-*"
PROBE_TIMEOUT_S = 20.0


def program(name: str, libexec_name: str = "") -> Optional[str]:
    """The path of ``name`` on PATH, else of ``libexec_name`` (or ``name``) under /usr/libexec, else None."""
    found = shutil.which(name)
    if found:
        return found
    path = os.path.join(LIBEXEC, libexec_name or name)
    return path if os.access(path, os.X_OK) else None


def qemu() -> str:
    """QEMU's path (RHEL's qemu-kvm included); the bare name when there is none, so running it says so."""
    return program(QEMU, QEMU_LIBEXEC) or QEMU


@functools.lru_cache(maxsize=4)
def has_tcg(binary: str) -> bool:
    """Whether ``binary`` (a QEMU) was built with TCG, as it lists its accelerators."""
    try:
        listed = subprocess.run([binary, "-accel", "help"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "tcg" in listed.stdout.split()


def check_usable() -> Optional[str]:
    """None when QEMU can run guests here with the accelerator that works, else why not (the caller raises
    its own error, naming its parameter)."""
    binary = qemu()
    if not os.path.isabs(binary):
        return f"{QEMU} is not installed on the conversion host (nor RHEL's {LIBEXEC}/{QEMU_LIBEXEC})"
    if accelerator() == "tcg" and not has_tcg(binary):
        return (f"KVM does not work on this conversion host and its QEMU ({binary}) has no TCG to fall back on"
                " (RHEL builds qemu-kvm without it)")  # fmt: skip
    return None


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
    argv = [qemu(), "-machine", "pc,accel=kvm", "-cpu", "max", "-m", "256", "-nodefaults", "-display", "none",
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
