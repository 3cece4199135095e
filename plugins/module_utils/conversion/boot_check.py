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

A NIC that held static IPv4 addresses on VMware (``addresses``) must show them too: its user-mode
network is given their subnet, and the check knocks at each address through a host forward. To
pass the knock on, the network's router must find the address's owner, so it asks by ARP, and
only a guest holding the address answers: an ARP from that address proves the guest brought its
static configuration up on that NIC (see :func:`.traffic.sources`).

QEMU runs with ``snapshot=on`` and each NIC on its own user-mode network with ``restrict=on``: the
guest's writes go to a throw-away overlay, and nothing it sends leaves the check. KVM is used
when it works on the conversion host (see ``accel``), TCG otherwise.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from ansible_collections.xms.warm_migration.plugins.module_utils.common.process import dies_with_parent
from ansible_collections.xms.warm_migration.plugins.module_utils.conversion import traffic
from ansible_collections.xms.warm_migration.plugins.module_utils.conversion.accel import QEMU, accelerator, qemu
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
# The smallest subnet the check can give a NIC's user-mode network: QEMU puts its DHCP range at .15 on.
SMALLEST_NET_PREFIX = 27
KNOCK_EVERY_S = 2.0


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
    addresses: Dict[str, List[str]] = field(default_factory=dict)  # per MAC, the static addresses it answered at
    expected: Dict[str, List[str]] = field(default_factory=dict)  # per MAC, the static addresses checked
    unchecked: List[str] = field(default_factory=list)  # static addresses the check could not knock at

    def as_dict(self) -> Dict[str, object]:
        return {
            "passed": True,
            "nics": self.nics,
            "required": self.required,
            "addresses": self.addresses,
            "unchecked_addresses": self.unchecked,
            "firmware": self.firmware,
            "duration_s": round(self.duration_s, 1),
            "accelerator": self.accelerator,
        }


def expectations(conversion: Optional[Mapping[str, object]]) -> Tuple[List[str], Dict[str, List[str]]]:
    """What a conversion's result (``ConversionResult.as_dict``) asks the check to see: the NICs whose names it
    pinned (``required``) and the static addresses the guest's configuration sets (``addresses``). Nothing
    where this run converted nothing."""
    conversion = conversion or {}
    return list((conversion.get("pinned_names") or {}).values()), dict(conversion.get("static_addresses") or {})


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


@dataclass(frozen=True)
class Knock:
    """A static address the check knocks at: 127.0.0.1:``port`` is forwarded to its port 22 in ``mac``'s network."""

    mac: str
    address: str
    port: int


def plan_knocks(addresses: Mapping[str, Sequence[str]]) -> Tuple[Dict[str, str], List[Knock], List[str]]:
    """For ``addresses`` (per MAC, the static IPv4 interfaces the guest held, ``10.10.1.50/24``): each NIC's extra
    user-mode network options, the knocks, and the addresses the check cannot knock at (with why).

    A NIC's network is the subnet of its first address; its router and DNS take the subnet's first
    free addresses. Addresses in another subnet of the same NIC, or in a subnet too small for
    QEMU's DHCP range, are left unchecked (and said so).
    """
    options: Dict[str, str] = {}
    knocks: List[Knock] = []
    unchecked: List[str] = []
    for mac, texts in addresses.items():
        interfaces = [ipaddress.IPv4Interface(t) for t in texts]
        if not interfaces:
            continue
        net = interfaces[0].network
        if net.prefixlen > SMALLEST_NET_PREFIX:
            unchecked += [f"{i} ({mac}: a subnet smaller than /{SMALLEST_NET_PREFIX})" for i in interfaces]
            continue
        taken = {i.ip for i in interfaces}
        router, dns = itertools.islice((a for a in net.hosts() if a not in taken), 2)
        mine = [i for i in interfaces if i.network == net]
        unchecked += [f"{i} ({mac}: a second subnet on one NIC)" for i in interfaces if i.network != net]
        knocks += [Knock(mac.lower(), str(i.ip), _free_port()) for i in mine]
        forwards = "".join(f",hostfwd=tcp:127.0.0.1:{k.port}-{k.address}:22" for k in knocks if k.mac == mac.lower())
        options[mac.lower()] = f",net={net},host={router},dns={dns}{forwards}"
    return options, knocks, unchecked


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def qemu_argv(
    devices: Sequence[str],
    macs: Sequence[str],
    work: str,
    accel: str,
    memory_mb: int,
    firmware: str = "bios",
    fmt: str = "raw",
    networks: Optional[Mapping[str, str]] = None,
) -> list:
    """QEMU's command line: ``work`` holds the console log, the NICs' captures and OVMF's variables; ``networks``
    adds options to a MAC's user-mode network (:func:`plan_knocks`)."""
    # A VGA card although nobody looks: GRUB's graphical terminal hangs without one (seen on Debian 12).
    argv = [qemu(), "-machine", f"pc,accel={accel}", "-m", str(memory_mb), "-smp", "1", "-nodefaults",
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
        argv += ["-netdev", f"user,id=n{index},restrict=on{(networks or {}).get(mac, '')}",
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
    addresses: Optional[Mapping[str, Sequence[str]]] = None,
) -> BootResult:
    """Boot ``devices`` (in ``fmt``, boot disk first) read-only under QEMU with a NIC per MAC of ``macs``; raise
    :class:`BootCheckError` unless each MAC of ``required``, and at least one MAC, sent traffic, and the guest
    answered at each static address of ``addresses`` (per MAC, ``10.10.1.50/24``) on its MAC's NIC."""
    if not devices:
        raise BootCheckError("there are no disks to boot")
    if not macs:
        raise BootCheckError("the boot check needs at least one NIC to see the guest come up", parameter="network_map")
    macs = [m.lower() for m in macs]
    networks, knocks, unchecked = plan_knocks({m.lower(): a for m, a in (addresses or {}).items() if m.lower() in macs})
    expected: Dict[str, List[str]] = {}
    for knock in knocks:
        expected.setdefault(knock.mac, []).append(knock.address)
    required = list(dict.fromkeys([m.lower() for m in required] + list(expected)))
    accel = accelerator()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="xms-boot-") as work:
        open(os.path.join(work, "console.log"), "w").close()
        argv = qemu_argv(devices, macs, work, accel, memory_mb, firmware, fmt, networks)
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
            stuck, exited = _watch(proc, work, macs, required, knocks, started + timeout_s)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        seen, sources = _read(work, macs)  # what came in until QEMU stopped
        with open(os.path.join(work, "console.log"), errors="replace") as handle:
            tail = "\n".join(handle.read().splitlines()[-25:])
        stderr = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
    duration = time.monotonic() - started
    answered = {m: [a for a in wanted if a in sources[m]] for m, wanted in expected.items()}
    result = BootResult(seen, firmware, duration, accel, tail, required, answered, expected, unchecked)
    if stuck or not _passed(seen, sources, required, knocks):
        raise BootCheckError(_why_not(result, stuck, exited, stderr, timeout_s), hint=_hint(result, stuck))
    return result


def _passed(seen: Dict[str, List[str]], sources: Dict[str, set], required: Sequence[str], knocks) -> bool:
    return any(seen.values()) and all(seen[m] for m in required) and all(k.address in sources[k.mac] for k in knocks)


def _read(work: str, macs: Sequence[str]) -> Tuple[Dict[str, List[str]], Dict[str, set]]:
    """What each MAC sent so far, and the IPv4 addresses it sent from."""
    captures = {}
    for index, mac in enumerate(macs):
        path = os.path.join(work, f"nic{index}.pcap")
        if os.path.exists(path):  # QEMU makes it at start
            with open(path, "rb") as handle:
                captures[mac] = handle.read()
    sources = {mac: traffic.sources(captures.get(mac, b""), mac) for mac in macs}
    return traffic.evidence_by_mac(captures, macs), sources


def _knock(knocks: Sequence[Knock], sources: Dict[str, set]) -> None:
    """Knock at each static address not heard from yet: QEMU's network then asks who holds it."""
    for knock in knocks:
        if knock.address not in sources[knock.mac]:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", knock.port), timeout=0.2):
                pass


def _watch(proc: subprocess.Popen, work: str, macs, required, knocks, deadline: float):
    """Poll the captures and the console (knocking at the static addresses) until a verdict, QEMU's exit or
    the deadline; returns (the stuck state or None, whether QEMU exited)."""
    knocked = 0.0
    while True:
        seen, sources = _read(work, macs)
        if _passed(seen, sources, required, knocks):
            return None, False
        if knocks and time.monotonic() - knocked >= KNOCK_EVERY_S:
            _knock(knocks, sources)
            knocked = time.monotonic()
        with open(os.path.join(work, "console.log"), errors="replace") as handle:
            stuck = stuck_state(handle.read())
        if stuck:
            return stuck, False
        if proc.poll() is not None:
            return None, True
        if time.monotonic() >= deadline:
            return None, False
        time.sleep(0.5)


def _why_not(result: BootResult, stuck: Optional[str], exited: bool, stderr: str, timeout_s: float) -> str:
    silent = [m for m in result.required or result.nics if not result.nics[m]]
    heard = {m: e for m, e in result.nics.items() if e}
    if stuck:
        why = stuck
    elif exited and not heard:
        why = f"QEMU stopped before the guest sent anything ({stderr[-300:] or 'no message'})"
    elif heard and silent:
        why = (f"no traffic within {timeout_s:.0f} s ({result.accelerator}) from {', '.join(silent)}, which the guest's"
               f" network configuration names; heard: {_told(heard)}")  # fmt: skip
    elif heard:
        missing = [f"{a} on {m}" for m, want in result.expected.items() for a in want if a not in result.addresses[m]]
        why = (f"the guest did not answer within {timeout_s:.0f} s ({result.accelerator}) at the static address it held"
               f" on VMware: {', '.join(missing)}; heard: {_told(heard)}")  # fmt: skip
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
            "The guest runs but does not bring up a NIC or a static address it configures: check the conversion's"
            " pinned_names and the guest's network configuration (conversion.run_scripts can fix it); roll back"
            " with cutover state=rolled_back to run the source again"
        )
    return "Check the conversion log; roll back with cutover state=rolled_back to run the source again"


def _told(heard: Dict[str, List[str]]) -> str:
    return "; ".join(f"{mac}: {', '.join(lines)}" for mac, lines in heard.items())
