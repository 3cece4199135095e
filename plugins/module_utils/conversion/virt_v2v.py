"""Guest conversion with virt-v2v-in-place, over the attached target volumes.

A VMware guest does not boot on KVM as it is: its initramfs lacks the virtio
drivers, its fstab and boot loader may name ``/dev/sdX``, Windows lacks the
virtio storage driver. ``virt-v2v-in-place`` fixes all of that on the disks
where they lie, which is why conversion runs on the conversion host after the
final sync, on the very volumes the instance boots from: no copy, no staging.

The guest is described to virt-v2v with a small libvirt XML (``-i
libvirtxml``) because ``-i disk`` takes a single disk only. User scripts (run
once now, or at the guest's first boot) go through ``virt-customize`` after the
conversion, as virt-v2v 2.x has no such options itself.

A Linux guest's network configuration often names its NICs as they were
named on VMware (``ens192``: the ACPI slot vSphere gave the vmxnet3). On
virtio the same NIC is ``ens3``, so a static address would not apply and
the instance would be unreachable. Before virt-v2v runs (its initramfs
rebuild then carries them too), each name the guest's configuration uses
is pinned to the MAC the instance's port keeps, with a systemd ``.link``
file; a guest whose configuration names no interface gets nothing.

Output goes to a log file in a 0700 directory; the error a user sees quotes
virt-v2v's own error lines, and names the log for the rest.
"""

from __future__ import annotations

import ipaddress
import os
import re
import signal
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple
from xml.sax.saxutils import escape, quoteattr

from ansible_collections.xms.warm_migration.plugins.module_utils.common.process import dies_with_parent
from ansible_collections.xms.warm_migration.plugins.module_utils.conversion.accel import (
    accelerator,
    check_usable,
    program,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.conversion.errors import ConversionError

V2V = "virt-v2v-in-place"
CUSTOMIZE = "virt-customize"


@dataclass
class ConversionOptions:
    """What the user controls of the conversion step."""

    skip: bool = False  # e.g. the guest already runs virtio drivers; recorded as not converted
    run_scripts: List[str] = field(default_factory=list)  # run inside the guest now, after conversion
    firstboot_scripts: List[str] = field(default_factory=list)  # run inside the guest at its first boot
    timeout_s: float = 3600.0
    virtio_win: Optional[str] = None  # virtio-win ISO or directory, needed for Windows guests
    # Where virt-v2v finds the service (rhsrvany.exe or pvvxsvc.exe) that runs a Windows guest's first-boot
    # scripts: Fedora and RHEL ship it here, Debian and Ubuntu do not ship it at all.
    virt_tools: str = "/usr/share/virt-tools"
    log_dir: str = "/var/lib/xms-warm-migration/conversion"


@dataclass(frozen=True)
class NicIdentity:
    """A NIC of the source VM: the MAC its port keeps, its name in the guest on VMware (if known), and the IPv4
    addresses VMware Tools saw on it (``10.10.1.50/24``), those a DHCP server gave excepted; with the guest's
    default gateway (where it lies in one of the NIC's subnets) and DNS servers, for Windows (static_ip_options)."""

    mac: str
    vmware_name: Optional[str] = None
    addresses: Tuple[str, ...] = ()
    gateway: str = ""
    dns: Tuple[str, ...] = ()


@dataclass
class ConversionResult:
    converted: bool
    skipped: bool
    duration_s: float
    warnings: List[str]
    log: Optional[str]
    pinned_names: Dict[str, str] = field(default_factory=dict)  # interface name -> MAC, as the guest now says
    # MAC -> the addresses of NicIdentity.addresses the guest's network configuration sets itself
    static_addresses: Dict[str, List[str]] = field(default_factory=dict)
    esp_fallback: Optional[str] = None  # the loader put at EFI/BOOT/BOOTX64.EFI, where one was missing

    def as_dict(self) -> Dict[str, object]:
        return {
            "converted": self.converted,
            "skipped": self.skipped,
            "duration_s": round(self.duration_s, 1),
            "warnings": self.warnings,
            "log": self.log,
            "pinned_names": self.pinned_names,
            "static_addresses": self.static_addresses,
            "esp_fallback": self.esp_fallback,
        }


def check_options(options: ConversionOptions, guest_id: str = "") -> None:
    """Refuse bad input before the guest is shut down, not after.

    ``guest_id`` is vSphere's guest OS id: a Windows guest cannot boot on KVM without the virtio
    drivers virt-v2v installs from virtio-win, and virt-v2v refuses to convert one at all without a
    service to run its first-boot scripts (they restore the static addresses and remove VMware Tools).
    """
    windows = not options.skip and is_windows(guest_id)
    if windows and not options.virtio_win:
        raise ConversionError(
            f"the guest is Windows ({guest_id}): converting it needs the virtio-win drivers",
            parameter="conversion.virtio_win",
            hint="Give the path of the virtio-win ISO (or its unpacked directory) on the conversion host",
        )
    if windows and not any(os.path.isfile(os.path.join(options.virt_tools, f)) for f in FIRSTBOOT_SERVICES):
        raise ConversionError(
            f"the guest is Windows ({guest_id}): virt-v2v needs {' or '.join(FIRSTBOOT_SERVICES)} in"
            f" '{options.virt_tools}' to install its first-boot scripts",
            parameter="conversion.virt_tools",
            hint="Debian and Ubuntu do not ship it: copy rhsrvany.exe from Fedora's mingw32-srvany (or RHEL's"
            " virt-v2v) package, or build it (github.com/rwmjones/rhsrvany), and name its directory",
        )
    for name, scripts in (("conversion.run_scripts", options.run_scripts),
                          ("conversion.firstboot_scripts", options.firstboot_scripts)):  # fmt: skip
        for script in scripts:
            if not os.path.isfile(script):
                raise ConversionError(f"script '{script}' does not exist on the conversion host", parameter=name)
    if options.virtio_win and not os.path.exists(options.virtio_win):
        raise ConversionError(
            f"virtio-win drivers '{options.virtio_win}' do not exist on the conversion host",
            parameter="conversion.virtio_win",
            hint="Give the path of the virtio-win ISO or of its unpacked directory",
        )
    if options.timeout_s <= 0:
        raise ConversionError("the conversion timeout must be positive", parameter="conversion.timeout")


def check_host(options: ConversionOptions) -> None:
    """Refuse, before the guest is shut down, a conversion host that cannot convert: no virt-v2v-in-place
    (on PATH, or under /usr/libexec as RHEL installs it), or no QEMU that runs here (libguestfs's appliance
    and the boot check need one)."""
    if options.skip:
        return
    if program(V2V) is None:
        raise ConversionError(
            f"{V2V} is not installed on the conversion host (on PATH, or under /usr/libexec as on RHEL)",
            parameter="conversion",
            hint="Install virt-v2v (bindep.txt lists it), or set conversion.skip for a guest that needs no conversion",
        )
    why = check_usable()
    if why:
        raise ConversionError(
            why,
            parameter="conversion",
            hint="Give the conversion host a working /dev/kvm (a bare-metal host, or nested virtualization), or a QEMU"
            " built with TCG (Debian's and Ubuntu's qemu-system-x86, Fedora's qemu-system-x86-core)",
        )


def nic_identity(
    mac: str, vmware_name: Optional[str], addresses: Sequence[str], gateway: str = "", dns: Sequence[str] = ()
) -> NicIdentity:
    """A NIC's identity with the guest's default gateway where it lies in a subnet of the NIC's addresses."""
    inside = any(gateway and ipaddress.ip_address(gateway) in ipaddress.ip_interface(a).network for a in addresses)
    return NicIdentity(mac, vmware_name, tuple(addresses), gateway if inside else "", tuple(dns) if addresses else ())


def is_windows(guest_id: str) -> bool:
    """vSphere's guest OS ids of Windows all start so (``windows2019srvNext_64Guest``)."""
    return guest_id.lower().startswith("windows")


def static_ip_options(nics: Sequence[NicIdentity]) -> List[str]:
    """virt-v2v's ``--mac MAC:ip:ADDRESS,GATEWAY,PREFIX,DNS...`` for each address of each NIC.

    Windows keeps its addresses per network adapter: on virtio the NIC is a new adapter, which starts
    with DHCP. virt-v2v writes a first-boot script that sets the address on the adapter with the MAC.
    virt-v2v 2.2 takes a prefix length only after a gateway: a NIC with no gateway in its subnet gets
    the address alone, and Windows picks the prefix length (the conversion warns: _ungated).
    """
    options = []
    for nic in nics:
        for address in nic.addresses:
            ip, _slash, prefix = address.partition("/")
            fields = [ip, nic.gateway, prefix, *nic.dns] if nic.gateway else [ip]
            options += ["--mac", f"{nic.mac}:ip:{','.join(fields)}"]
    return options


def _ungated(nics: Sequence[NicIdentity]) -> List[str]:
    return [
        f"{address} on {nic.mac}: no default gateway in its subnet, so virt-v2v sets the address again without its"
        " prefix length (Windows then picks one): check it on the instance"
        for nic in nics
        if not nic.gateway
        for address in nic.addresses
    ]


def identity_script(nics: Sequence[NicIdentity]) -> str:
    """The shell script, run inside the guest, that keeps its network identity and says which addresses are static.

    A VMware name is pinned to its MAC only where the guest's configuration mentions it (ifupdown,
    NetworkManager keyfiles, systemd-networkd, netplan, RHEL's ifcfg files): a guest that matches
    NICs by MAC, or lets DHCP find them, keeps virtio's names. An address VMware Tools saw is
    static where the configuration names it (the origin VMware Tools gives an address is optional,
    and often unset for Linux guests; a leased address is in no configuration file): the boot
    check then asks for it.
    """
    config = " ".join(_NETWORK_CONFIG)
    lines = [
        "#!/bin/sh",
        "# xms.warm_migration: keep the interface names the guest's network configuration uses",
        "pin() {",
        f'  grep -rqsw -- "$1" {config} || return 0',
        "  mkdir -p /etc/systemd/network",
        "  printf '# written by xms.warm_migration: the name this NIC had on VMware\\n"
        '[Match]\\nMACAddress=%s\\n\\n[Link]\\nName=%s\\n\' "$2" "$1" >"/etc/systemd/network/10-xms-$1.link"',
        '  echo "xms-pinned $1 $2"',
        "}",
        "static() {",
        f'  grep -rqswF -- "${{2%/*}}" {config} || return 0',
        '  echo "xms-static $1 $2"',
        "}",
    ]
    lines += [f"pin {nic.vmware_name} {nic.mac}" for nic in nics if nic.vmware_name]
    lines += [f"static {nic.mac} {address}" for nic in nics for address in nic.addresses]
    return "\n".join(lines) + "\n"


def esp_fallback_script() -> str:
    """The shell script, run inside a UEFI Linux guest, that gives its ESP the removable-media path.

    A VMware VM boots from a boot entry in its NVRAM, which stays behind: the instance starts with an
    empty variable store, and the firmware then looks only for ``EFI/BOOT/BOOTX64.EFI``. Debian's
    installer (and others) leave none; virt-v2v 2.2 fixes this for some distributions only ("No UEFI
    fix rule for debian 12"). Where the path is missing, the vendor's loader is put there as
    ``grub-install --force-extra-removable`` does: shim as BOOTX64.EFI with GRUB (and MokManager)
    beside it, or GRUB alone where there is no shim. shim's fallback (fbx64.efi) is left out: it
    would write boot entries and reset the machine.
    """
    return """#!/bin/sh
# xms.warm_migration: the ESP's fallback path, for firmware without the source's boot entries
for esp in /boot/efi/EFI /efi/EFI; do [ -d "$esp" ] && break; done
[ -d "$esp" ] || exit 0
[ -f "$esp/BOOT/BOOTX64.EFI" ] && exit 0  # FAT: the name matches whatever its case
for vendor in "$esp"/*; do
  [ -f "$vendor/grubx64.efi" ] || continue
  mkdir -p "$esp/BOOT"
  if [ -f "$vendor/shimx64.efi" ]; then
    cp "$vendor/shimx64.efi" "$esp/BOOT/BOOTX64.EFI"
    cp "$vendor/grubx64.efi" "$esp/BOOT/grubx64.efi"
    if [ -f "$vendor/mmx64.efi" ]; then cp "$vendor/mmx64.efi" "$esp/BOOT/mmx64.efi"; fi
    echo "xms-esp-fallback ${vendor#"${esp%/EFI}"/}/shimx64.efi"
  else
    cp "$vendor/grubx64.efi" "$esp/BOOT/BOOTX64.EFI"
    echo "xms-esp-fallback ${vendor#"${esp%/EFI}"/}/grubx64.efi"
  fi
  exit 0
done
"""


FIRSTBOOT_SERVICES = ("rhsrvany.exe", "pvvxsvc.exe")
_NO_DRIVERS = re.escape(V2V) + r": This guest does not have virtio drivers installed"

_NETWORK_CONFIG = (
    "/etc/network/interfaces",
    "/etc/network/interfaces.d",
    "/etc/NetworkManager/system-connections",
    "/etc/systemd/network",
    "/etc/netplan",
    "/etc/sysconfig/network-scripts",
)


def domain_xml(name: str, devices: Sequence[str], macs: Sequence[str] = (), fmt: str = "raw") -> str:
    """The minimal libvirt description virt-v2v needs: the disks (in ``fmt``) in boot order, the NICs by MAC."""
    disks = []
    for index, path in enumerate(devices):
        block = _is_block(path)
        kind, attr = ("block", "dev") if block else ("file", "file")
        disks.append(
            f"    <disk type='{kind}' device='disk'>\n"
            f"      <driver name='qemu' type={quoteattr(fmt)}/>\n"
            f"      <source {attr}={quoteattr(path)}/>\n"
            f"      <target dev='sd{chr(ord('a') + index)}' bus='scsi'/>\n"
            f"    </disk>\n"
        )
    nics = [
        f"    <interface type='network'><mac address={quoteattr(mac)}/><source network='default'/></interface>\n"
        for mac in macs
    ]
    return (
        "<domain type='vmware'>\n"
        f"  <name>{escape(name)}</name>\n"
        "  <memory unit='MiB'>2048</memory>\n"
        "  <vcpu>2</vcpu>\n"
        "  <os><type>hvm</type></os>\n"
        "  <devices>\n" + "".join(disks) + "".join(nics) + "  </devices>\n</domain>\n"
    )


def convert_in_place(
    devices: Sequence[str],
    options: ConversionOptions,
    *,
    name: str = "guest",
    nics: Sequence[NicIdentity] = (),
    guest_id: str = "",
    fmt: str = "raw",
    firmware: str = "bios",
) -> ConversionResult:
    """Convert the guest on ``devices`` (its disks in ``fmt``, boot disk first) for KVM, in place.

    ``guest_id`` is vSphere's guest OS id: Windows keeps its addresses per adapter, restored at its first
    boot (:func:`static_ip_options`). ``firmware`` is the VM's: a UEFI Linux guest gets the ESP's fallback
    path (:func:`esp_fallback_script`).
    """
    check_options(options)
    if options.skip:
        return ConversionResult(converted=False, skipped=True, duration_s=0.0, warnings=[], log=None)
    os.makedirs(options.log_dir, mode=0o700, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="xms-v2v-") as tmp:
        log = os.path.join(options.log_dir, f"{_safe(name)}-{time.strftime('%Y%m%dT%H%M%S')}.log")
        env = _environment(options, tmp)

        def customize(actions: List[str]) -> None:
            # --format given: the guest's data never decides how its disk is read. virt-customize adds its -a
            # disks last first (customize_main.ml pushes each to the front of its list), and a guest's fstab
            # naming /dev/sda1 means the first disk added: the boot disk must come last on the command line.
            argv = [CUSTOMIZE, "-v", "-x", "--no-network", "--format", fmt]
            argv += [a for d in reversed(devices) for a in ("-a", d)] + actions
            _run(argv, env, log, options.timeout_s - (time.monotonic() - started))

        windows = is_windows(guest_id)
        if any(nic.vmware_name or nic.addresses for nic in nics) and not windows:
            script = os.path.join(tmp, "network-identity.sh")
            with open(script, "w") as handle:
                handle.write(identity_script(nics))
            customize(["--run", script])
        xml_path = os.path.join(tmp, "guest.xml")
        with open(xml_path, "w") as handle:
            handle.write(domain_xml(name, devices, [nic.mac for nic in nics], fmt))
        remaining = options.timeout_s - (time.monotonic() - started)
        argv = [program(V2V) or V2V, "-v", "-x", "-i", "libvirtxml", xml_path]
        _run([*argv, *(static_ip_options(nics) if windows else [])], env, log, remaining)
        if _matching(log, rf"^({_NO_DRIVERS})"):
            # virt-v2v then leaves the guest on emulated devices; the instance's volumes are virtio disks.
            raise ConversionError(
                f"virt-v2v found no virtio drivers for this guest in '{options.virtio_win}'; log: {log}",
                parameter="conversion.virtio_win",
                hint="Give a virtio-win ISO or directory that has drivers for this Windows version"
                " (its viostor and NetKVM folders name the version, e.g. 2k22/amd64)",
            )
        actions = []
        if firmware == "efi" and not windows:
            fallback = os.path.join(tmp, "esp-fallback.sh")
            with open(fallback, "w") as handle:
                handle.write(esp_fallback_script())
            actions += ["--run", fallback]
        actions += [a for script in options.run_scripts for a in ("--run", script)]
        actions += [a for script in options.firstboot_scripts for a in ("--firstboot", script)]
        if actions:
            customize(actions)
    return ConversionResult(
        converted=True,
        skipped=False,
        duration_s=time.monotonic() - started,
        warnings=_matching(log, r"^virt-v2v-in-place: warning: (.*)$") + (_ungated(nics) if windows else []),
        log=log,
        pinned_names=dict(m.split(" ", 1) for m in _matching(log, r"^xms-pinned (\S+ \S+)$", limit=None)),
        # Windows: the addresses virt-v2v's first-boot script sets (VMware Tools said they were set by hand)
        static_addresses={nic.mac: list(nic.addresses) for nic in nics if nic.addresses}
        if windows
        else _static(_matching(log, r"^xms-static (\S+ \S+)$", limit=None)),
        esp_fallback=next(iter(_matching(log, r"^xms-esp-fallback (\S+)$")), None),
    )


def appliance_env(tmp: str) -> Dict[str, str]:
    """The environment libguestfs's tools run in on the conversion host: the direct backend (no libvirtd
    needed), TCG where KVM does not work, ``tmp`` for the appliance's files, messages in English."""
    env = dict(os.environ)
    env.setdefault("LIBGUESTFS_BACKEND", "direct")
    if accelerator() == "tcg":
        env["LIBGUESTFS_BACKEND_SETTINGS"] = "force_tcg"
    env["TMPDIR"] = tmp
    env["LC_ALL"] = "C"
    return env


def _environment(options: ConversionOptions, tmp: str) -> Dict[str, str]:
    env = appliance_env(tmp)
    if options.virtio_win:
        env["VIRTIO_WIN"] = options.virtio_win
    env["VIRT_TOOLS_DATA_DIR"] = options.virt_tools
    return env


def _run(argv: List[str], env: Dict[str, str], log: str, timeout_s: float) -> None:
    tool = argv[0]
    with open(log, "ab") as out:
        os.fchmod(out.fileno(), 0o600)
        out.write(("$ " + " ".join(argv) + "\n").encode())
        out.flush()
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                env=env,
                start_new_session=True,
                preexec_fn=dies_with_parent(),  # pylint: disable=subprocess-popen-preexec-fn
            )
        except FileNotFoundError as err:
            raise ConversionError(
                f"{tool} is not installed on the conversion host",
                hint="Install Debian's virt-v2v and libguestfs-tools (bindep.txt), or set conversion.skip",
            ) from err
        try:
            rc = proc.wait(timeout=max(timeout_s, 1))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise ConversionError(
                f"{tool} did not finish within the conversion timeout; log: {log}",
                parameter="conversion.timeout",
                hint="Raise it (TCG-only conversion hosts are slow), then rerun the cutover: it resumes here",
            ) from None
    if rc != 0:
        errors = _matching(log, rf"^{re.escape(tool)}: error: (.*)$") or [f"exit status {rc}"]
        raise ConversionError(
            f"{tool} failed: {'; '.join(errors)}; log: {log}",
            hint="Fix the cause and rerun the cutover (it resumes at the conversion), "
            "or roll back with cutover state=rolled_back to power the source on again",
        )


def _static(lines: List[str]) -> Dict[str, List[str]]:
    """Per MAC, the addresses the identity script said were static (the log may hold its output twice)."""
    found: Dict[str, List[str]] = {}
    for line in lines:
        mac, address = line.split(" ", 1)
        if address not in found.setdefault(mac, []):
            found[mac].append(address)
    return found


def _matching(log: str, pattern: str, limit: Optional[int] = 10) -> List[str]:
    regex = re.compile(pattern)
    with open(log, errors="replace") as handle:
        return [m.group(1).strip() for m in map(regex.match, handle) if m][:limit]


def _is_block(path: str) -> bool:
    return stat.S_ISBLK(os.stat(path).st_mode)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:64] or "guest"
