"""Prove that converted disks boot: start them under QEMU with virtio devices.

The check boots the target volumes with a virtio disk per volume and a virtio
NIC carrying the MAC the instance will have, and reads the serial console. It
passes when the guest prints the boot marker (the lab guest's unit prints
``XMS-BOOT-OK macs: ens3=52:54:...``) with the expected MAC; it fails early on
the signs of a guest that will never get there (kernel panic, the initramfs
shell, systemd's emergency mode). QEMU runs with ``snapshot=on``: the guest's
writes go to a throw-away overlay, so the check never changes the volumes the
instance then boots from. KVM is used when it works on the conversion host
(see ``accel``), TCG otherwise. In a real cloud the same ``parse_console`` reads the instance's
console log.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import Dict, Optional, Sequence

from ansible_collections.xms.warm_migration.plugins.module_utils.common.process import dies_with_parent
from ansible_collections.xms.warm_migration.plugins.module_utils.conversion.accel import QEMU, accelerator
from ansible_collections.xms.warm_migration.plugins.module_utils.conversion.errors import BootCheckError

MARKER = "XMS-BOOT-OK"
# Lines that mean the guest will not reach userspace on its own; worth failing on at once.
STUCK = (
    ("kernel panic", re.compile(r"Kernel panic - not syncing.*")),
    (
        "initramfs shell: root disk not found",
        re.compile(r"Gave up waiting for root (file system )?device.*|\(initramfs\)"),
    ),
    ("systemd emergency mode", re.compile(r"You are in emergency mode.*|Give root password for maintenance.*")),
)


@dataclass
class ConsoleVerdict:
    """What a console log says so far: reached userspace, stuck, or not yet known."""

    reached: bool
    macs: Dict[str, str]  # interface name -> MAC, as the guest reported them
    failure: Optional[str]


@dataclass
class BootResult:
    reached: bool
    mac_seen: bool
    macs: Dict[str, str]
    duration_s: float
    accelerator: str
    console_tail: str

    def as_dict(self) -> Dict[str, object]:
        return {
            "reached_userspace": self.reached,
            "mac_seen": self.mac_seen,
            "macs": self.macs,
            "duration_s": round(self.duration_s, 1),
            "accelerator": self.accelerator,
        }


def parse_console(text: str, marker: str = MARKER) -> ConsoleVerdict:
    """Read a serial console log: did the guest print ``marker``, with which NICs, or did it get stuck?"""
    for line in text.splitlines():
        if line.startswith(marker):
            macs = dict(re.findall(r"(\S+)=([0-9a-fA-F:]{17})", line))
            return ConsoleVerdict(reached=True, macs={k: v.lower() for k, v in macs.items()}, failure=None)
    for label, pattern in STUCK:
        found = pattern.search(text)
        if found:
            return ConsoleVerdict(reached=False, macs={}, failure=f"{label} ({found.group(0).strip()})")
    return ConsoleVerdict(reached=False, macs={}, failure=None)


def qemu_argv(devices: Sequence[str], mac: Optional[str], console: str, accel: str, memory_mb: int) -> list:
    # A VGA card although nobody looks: GRUB's graphical terminal hangs without one (seen on Debian 12).
    argv = [QEMU, "-machine", f"pc,accel={accel}", "-m", str(memory_mb), "-smp", "1", "-nodefaults",
            "-vga", "std", "-display", "none", "-no-reboot", "-serial", f"file:{console}"]  # fmt: skip
    if accel == "kvm":
        argv += ["-cpu", "host"]
    for index, path in enumerate(devices):
        argv += ["-drive", f"file={path},format=raw,if=none,id=d{index},snapshot=on,cache=unsafe",
                 "-device", f"virtio-blk-pci,drive=d{index}" + (",bootindex=0" if index == 0 else "")]  # fmt: skip
    nic = "virtio-net-pci,netdev=n0" + (f",mac={mac}" if mac else "")
    argv += ["-netdev", "user,id=n0,restrict=on", "-device", nic]
    return argv


def boot_check(
    devices: Sequence[str],
    *,
    mac: Optional[str],
    timeout_s: float = 300.0,
    marker: str = MARKER,
    memory_mb: int = 1024,
) -> BootResult:
    """Boot ``devices`` (boot disk first) read-only under QEMU; raise :class:`BootCheckError` unless userspace runs."""
    if not devices:
        raise BootCheckError("there are no disks to boot")
    accel = accelerator()
    mac = mac.lower() if mac else None
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="xms-boot-") as tmp:
        console = os.path.join(tmp, "console.log")
        open(console, "w").close()
        try:
            argv = qemu_argv(devices, mac, console, accel, memory_mb)
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,
                preexec_fn=dies_with_parent(),  # pylint: disable=subprocess-popen-preexec-fn
            )
        except FileNotFoundError:
            raise BootCheckError(
                f"{QEMU} is not installed on the conversion host", hint="Install qemu-system-x86"
            ) from None
        try:
            verdict, exited = _watch(proc, console, marker, started + timeout_s)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        with open(console, errors="replace") as handle:
            tail = "\n".join(handle.read().splitlines()[-25:])
        stderr = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
    duration = time.monotonic() - started
    if not verdict.reached:
        if verdict.failure:
            why = verdict.failure
        elif exited:
            why = f"QEMU stopped before the guest reached userspace ({stderr[-300:] or 'no message'})"
        else:
            why = f"no boot marker '{marker}' within {timeout_s:.0f} s ({accel})"
        raise BootCheckError(
            f"the converted disks did not boot: {why}. Last console lines:\n{tail}",
            hint="Check the conversion log; roll back with cutover state=rolled_back to run the source again",
        )
    mac_seen = mac is None or mac in verdict.macs.values()
    if not mac_seen:
        raise BootCheckError(
            f"the guest booted but reports NICs {verdict.macs}, not the MAC {mac} its port will have",
        )
    return BootResult(True, mac_seen, verdict.macs, duration, accel, tail)


def _watch(proc: subprocess.Popen, console: str, marker: str, deadline: float):
    """Poll the console until a verdict, QEMU's exit or the deadline; returns (verdict, qemu_exited)."""
    while True:
        with open(console, errors="replace") as handle:
            verdict = parse_console(handle.read(), marker)
        if verdict.reached or verdict.failure:
            return verdict, False
        if proc.poll() is not None:
            with open(console, errors="replace") as handle:
                return parse_console(handle.read(), marker), True
        if time.monotonic() >= deadline:
            return verdict, False
        time.sleep(0.5)
