"""Prove that converted disks boot, from the guest's own behaviour: nothing inside the guest is ours.

The check boots the volumes under QEMU as the instance will have them: the source VM's firmware
(SeaBIOS for ``bios``; OVMF with a fresh, empty variable store for ``efi``, as a new instance
starts without the source's NVRAM), a virtio disk per volume in the VM's boot order, and one
virtio NIC per MAC the instance's ports will carry. Each NIC's frames are captured from QEMU's
network backend (``filter-dump``): a frame from a NIC's MAC (DHCP, ARP, IPv6 neighbour or router
solicitation) shows that the kernel, the virtio drivers and the guest's network configuration
brought that interface up (see :mod:`.traffic`). The check passes once every MAC in ``required``
(the NICs the guest's configuration names, pinned by the conversion) and at least one MAC sent
something. A serial console, where the guest has one, is read only to fail early on the states a
guest never leaves on its own (kernel panic, the initramfs shell, systemd's emergency mode).

QEMU runs with ``snapshot=on`` and each NIC on its own user-mode network with ``restrict=on``: the
guest's writes go to a throw-away overlay, and nothing it sends leaves the check. KVM is used
when it works on the conversion host (see ``accel``), TCG otherwise.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from ansible_collections.xms.warm_migration.plugins.module_utils.common.process import dies_with_parent
from ansible_collections.xms.warm_migration.plugins.module_utils.conversion import traffic
from ansible_collections.xms.warm_migration.plugins.module_utils.conversion.accel import QEMU, accelerator
from ansible_collections.xms.warm_migration.plugins.module_utils.conversion.errors import BootCheckError

# Lines that mean the guest will not reach userspace on its own; worth failing on at once.
STUCK = (
    ("kernel panic", re.compile(r"Kernel panic - not syncing.*")),
    (
        "initramfs shell: root disk not found",
        re.compile(r"Gave up waiting for root (file system )?device.*|\(initramfs\)"),
    ),
    ("systemd emergency mode", re.compile(r"You are in emergency mode.*|Give root password for maintenance.*")),
    # OVMF, with an empty variable store, found no loader: it falls back to its shell (it writes to the serial
    # port whatever the guest's own console is). A UEFI guest without the ESP's fallback path looks like this.
    (
        "UEFI firmware found no boot loader",
        re.compile(r'BdsDxe: starting Boot\w+ "EFI Internal Shell".*|No bootable option or device was found.*'),
    ),
)
# OVMF's code and its variable-store template, as Debian (ovmf) and Fedora/RHEL (edk2-ovmf) install them.
OVMF = (
    ("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"),
    ("/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd"),
    ("/usr/share/edk2/ovmf/OVMF_CODE.fd", "/usr/share/edk2/ovmf/OVMF_VARS.fd"),
)


def stuck_state(console: str) -> Optional[str]:
    """The state a console log shows the guest stuck in (it will not leave it on its own), if any."""
    for label, pattern in STUCK:
        found = pattern.search(console)
        if found:
            return f"{label} ({found.group(0).strip()})"
    return None


@dataclass
class BootResult:
    """What the boot check saw: per MAC, what the guest sent from it (empty: nothing)."""

    nics: Dict[str, List[str]]
    firmware: str
    duration_s: float
    accelerator: str
    console_tail: str = ""
    required: List[str] = field(default_factory=list)

    def as_dict(self) -> Dict[str, object]:
        return {
            "passed": True,
            "nics": self.nics,
            "required": self.required,
            "firmware": self.firmware,
            "duration_s": round(self.duration_s, 1),
            "accelerator": self.accelerator,
        }


def ovmf() -> Tuple[str, str]:
    """OVMF's code and variable-store template on this host."""
    for code, variables in OVMF:
        if os.path.exists(code) and os.path.exists(variables):
            return code, variables
    raise BootCheckError(
        "the source VM boots with UEFI and the conversion host has no OVMF firmware to boot it with",
        parameter="boot_check",
        hint="Install ovmf (Debian, Ubuntu) or edk2-ovmf (Fedora, RHEL)",
    )


def refusal(firmware: str, nic_count: int) -> Optional[BootCheckError]:
    """Why this host cannot boot-check a VM with ``firmware`` and ``nic_count`` mapped NICs, if it cannot:
    asked before the cutover shuts the source down."""
    if nic_count == 0:
        return BootCheckError(
            "the boot check sees a guest come up by its traffic, and the VM has no NIC mapped to a network",
            parameter="boot_check",
            hint="Map a NIC in network_map, or cut over with boot_check: false",
        )
    if firmware == "efi":
        try:
            ovmf()
        except BootCheckError as err:
            return err
    return None


def qemu_argv(
    devices: Sequence[str],
    macs: Sequence[str],
    work: str,
    accel: str,
    memory_mb: int,
    firmware: str = "bios",
    fmt: str = "raw",
) -> list:
    """QEMU's command line: ``work`` holds the console log, the NICs' captures and OVMF's variables."""
    # A VGA card although nobody looks: GRUB's graphical terminal hangs without one (seen on Debian 12).
    argv = [QEMU, "-machine", f"pc,accel={accel}", "-m", str(memory_mb), "-smp", "1", "-nodefaults",
            "-vga", "std", "-display", "none", "-no-reboot", "-serial", f"file:{work}/console.log"]  # fmt: skip
    if accel == "kvm":
        argv += ["-cpu", "host"]
    if firmware == "efi":
        code, template = ovmf()
        variables = os.path.join(work, "OVMF_VARS.fd")
        shutil.copyfile(template, variables)  # empty: the source's boot entries stay behind on VMware
        argv += ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
                 "-drive", f"if=pflash,format=raw,unit=1,file={variables}"]  # fmt: skip
    for index, path in enumerate(devices):
        argv += ["-drive", f"file={path},format={fmt},if=none,id=d{index},snapshot=on,cache=unsafe",
                 "-device", f"virtio-blk-pci,drive=d{index},bootindex={index}"]  # fmt: skip
    for index, mac in enumerate(macs):
        argv += ["-netdev", f"user,id=n{index},restrict=on",
                 "-object", f"filter-dump,id=f{index},netdev=n{index},file={work}/nic{index}.pcap",
                 "-device", f"virtio-net-pci,netdev=n{index},mac={mac}"]  # fmt: skip
    return argv


def boot_check(
    devices: Sequence[str],
    *,
    macs: Sequence[str],
    required: Sequence[str] = (),
    firmware: str = "bios",
    fmt: str = "raw",
    timeout_s: float = 300.0,
    memory_mb: int = 1024,
) -> BootResult:
    """Boot ``devices`` (in ``fmt``, boot disk first) read-only under QEMU with a NIC per MAC of ``macs``; raise
    :class:`BootCheckError` unless each MAC of ``required``, and at least one MAC, sent traffic."""
    if not devices:
        raise BootCheckError("there are no disks to boot")
    if not macs:
        raise BootCheckError("the boot check needs at least one NIC to see the guest come up", parameter="network_map")
    macs = [m.lower() for m in macs]
    required = [m.lower() for m in required]
    accel = accelerator()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="xms-boot-") as work:
        open(os.path.join(work, "console.log"), "w").close()
        argv = qemu_argv(devices, macs, work, accel, memory_mb, firmware, fmt)
        try:
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
            seen, stuck, exited = _watch(proc, work, macs, required, started + timeout_s)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        seen = _read(work, macs)  # what came in until QEMU stopped
        with open(os.path.join(work, "console.log"), errors="replace") as handle:
            tail = "\n".join(handle.read().splitlines()[-25:])
        stderr = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
    duration = time.monotonic() - started
    result = BootResult(seen, firmware, duration, accel, tail, required)
    if stuck or not _passed(seen, required):
        raise BootCheckError(_why_not(result, stuck, exited, stderr, timeout_s), hint=_hint(result, stuck))
    return result


def _passed(seen: Dict[str, List[str]], required: Sequence[str]) -> bool:
    return any(seen.values()) and all(seen[m] for m in required)


def _read(work: str, macs: Sequence[str]) -> Dict[str, List[str]]:
    captures = {}
    for index, mac in enumerate(macs):
        path = os.path.join(work, f"nic{index}.pcap")
        if os.path.exists(path):  # QEMU makes it at start
            with open(path, "rb") as handle:
                captures[mac] = handle.read()
    return traffic.evidence_by_mac(captures, macs)


def _watch(proc: subprocess.Popen, work: str, macs, required, deadline: float):
    """Poll the captures and the console until a verdict, QEMU's exit or the deadline;
    returns (what each MAC sent, the stuck state or None, whether QEMU exited)."""
    while True:
        seen = _read(work, macs)
        if _passed(seen, required):
            return seen, None, False
        with open(os.path.join(work, "console.log"), errors="replace") as handle:
            stuck = stuck_state(handle.read())
        if stuck:
            return seen, stuck, False
        if proc.poll() is not None:
            return seen, None, True
        if time.monotonic() >= deadline:
            return seen, None, False
        time.sleep(0.5)


def _why_not(result: BootResult, stuck: Optional[str], exited: bool, stderr: str, timeout_s: float) -> str:
    silent = [m for m in result.required or result.nics if not result.nics[m]]
    heard = {m: e for m, e in result.nics.items() if e}
    if stuck:
        why = stuck
    elif exited and not heard:
        why = f"QEMU stopped before the guest sent anything ({stderr[-300:] or 'no message'})"
    elif heard:
        why = (f"no traffic within {timeout_s:.0f} s ({result.accelerator}) from {', '.join(silent)}, which the guest's"
               f" network configuration names; heard: {_told(heard)}")  # fmt: skip
    else:
        why = (f"no traffic from any NIC ({', '.join(result.nics)}) within {timeout_s:.0f} s ({result.accelerator},"
               f" {result.firmware})")  # fmt: skip
    console = (
        f" Last console lines:\n{result.console_tail}" if result.console_tail.strip() else " No serial console output."
    )
    return f"the converted disks did not boot: {why}.{console}"


def _hint(result: BootResult, stuck: Optional[str]) -> str:
    if not stuck and any(result.nics.values()):
        return (
            "The guest runs but does not bring up a NIC it configures: check the conversion's pinned_names and the"
            " guest's network configuration (conversion.run_scripts can fix it); roll back with cutover"
            " state=rolled_back to run the source again"
        )
    return "Check the conversion log; roll back with cutover state=rolled_back to run the source again"


def _told(heard: Dict[str, List[str]]) -> str:
    return "; ".join(f"{mac}: {', '.join(lines)}" for mac, lines in heard.items())
