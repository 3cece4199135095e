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

Output goes to a log file in a 0700 directory; the error a user sees quotes
virt-v2v's own error lines, and names the log for the rest.
"""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence
from xml.sax.saxutils import escape, quoteattr

from ansible_collections.xms.warm_migration.plugins.module_utils.common.process import dies_with_parent
from ansible_collections.xms.warm_migration.plugins.module_utils.conversion.accel import accelerator
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
    log_dir: str = "/var/lib/xms-warm-migration/conversion"


@dataclass
class ConversionResult:
    converted: bool
    skipped: bool
    duration_s: float
    warnings: List[str]
    log: Optional[str]

    def as_dict(self) -> Dict[str, object]:
        return {
            "converted": self.converted,
            "skipped": self.skipped,
            "duration_s": round(self.duration_s, 1),
            "warnings": self.warnings,
            "log": self.log,
        }


def check_options(options: ConversionOptions, guest_id: str = "") -> None:
    """Refuse bad input before the guest is shut down, not after.

    ``guest_id`` is vSphere's guest OS id: a Windows guest cannot boot on KVM without the
    virtio drivers virt-v2v installs from virtio-win.
    """
    if not options.skip and guest_id.lower().startswith("windows") and not options.virtio_win:
        raise ConversionError(
            f"the guest is Windows ({guest_id}): converting it needs the virtio-win drivers",
            parameter="conversion.virtio_win",
            hint="Give the path of the virtio-win ISO (or its unpacked directory) on the conversion host",
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


def domain_xml(name: str, devices: Sequence[str], macs: Sequence[str] = ()) -> str:
    """The minimal libvirt description virt-v2v needs: the disks in boot order, the NICs by MAC."""
    disks = []
    for index, path in enumerate(devices):
        block = _is_block(path)
        kind, attr = ("block", "dev") if block else ("file", "file")
        disks.append(
            f"    <disk type='{kind}' device='disk'>\n"
            f"      <driver name='qemu' type='raw'/>\n"
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
    devices: Sequence[str], options: ConversionOptions, *, name: str = "guest", macs: Sequence[str] = ()
) -> ConversionResult:
    """Convert the guest on ``devices`` (its disks, boot disk first) for KVM, in place."""
    check_options(options)
    if options.skip:
        return ConversionResult(converted=False, skipped=True, duration_s=0.0, warnings=[], log=None)
    os.makedirs(options.log_dir, mode=0o700, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="xms-v2v-") as tmp:
        xml_path = os.path.join(tmp, "guest.xml")
        with open(xml_path, "w") as handle:
            handle.write(domain_xml(name, devices, macs))
        log = os.path.join(options.log_dir, f"{_safe(name)}-{time.strftime('%Y%m%dT%H%M%S')}.log")
        env = _environment(options, tmp)
        remaining = options.timeout_s - (time.monotonic() - started)
        _run([V2V, "-v", "-x", "-i", "libvirtxml", xml_path], env, log, remaining)
        customize = []
        for script in options.run_scripts:
            customize += ["--run", script]
        for script in options.firstboot_scripts:
            customize += ["--firstboot", script]
        if customize:
            # --format raw: the guest's data never decides how its disk is read
            argv = [CUSTOMIZE, "--no-network", "--format", "raw"]
            argv += [a for d in devices for a in ("-a", d)] + customize
            _run(argv, env, log, options.timeout_s - (time.monotonic() - started))
    return ConversionResult(
        converted=True,
        skipped=False,
        duration_s=time.monotonic() - started,
        warnings=_matching(log, r"^virt-v2v-in-place: warning: (.*)$"),
        log=log,
    )


def _environment(options: ConversionOptions, tmp: str) -> Dict[str, str]:
    env = dict(os.environ)
    # The direct backend needs no libvirtd on the conversion host.
    env.setdefault("LIBGUESTFS_BACKEND", "direct")
    if accelerator() == "tcg":
        env["LIBGUESTFS_BACKEND_SETTINGS"] = "force_tcg"
    env["TMPDIR"] = tmp
    env["LC_ALL"] = "C"
    if options.virtio_win:
        env["VIRTIO_WIN"] = options.virtio_win
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


def _matching(log: str, pattern: str) -> List[str]:
    regex = re.compile(pattern)
    with open(log, errors="replace") as handle:
        return [m.group(1).strip() for m in map(regex.match, handle) if m][:10]


def _is_block(path: str) -> bool:
    return stat.S_ISBLK(os.stat(path).st_mode)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:64] or "guest"
