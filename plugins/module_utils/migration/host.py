"""Whether this machine can serve as a conversion host: what the conversion_host role checks after it set it up.

Each check names what is missing and what brings it, so a host is found wanting when it is prepared,
not at a cutover after the guest went down. Nothing here changes the host; the libguestfs test run
builds and boots libguestfs's appliance once (minutes under TCG), the only way to know that the
conversion's own tools work here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence

from ansible_collections.xms.warm_migration.plugins.module_utils.conversion import accel, virt_v2v
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack.attach import CONNECT_HINTS
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere import versions

# The client program os-brick runs for each protocol (its connectors call them by name).
PROTOCOL_CLIENTS = {
    "iscsi": "iscsiadm",
    "rbd": "rbd",
    "nfs": "mount.nfs",
    "fibre_channel": "multipath",
    "nvmeof": "nvme",
}
SBIN = ("/usr/sbin", "/sbin")  # where the storage clients live; a module's PATH may not name them
LIBGUESTFS_TEST_TIMEOUT_S = 1200.0


@dataclass
class HostCheck:
    name: str
    ok: bool
    message: str


def tool(name: str) -> Optional[str]:
    """``name`` on PATH or in the sbin directories."""
    return shutil.which(name) or shutil.which(name, path=os.pathsep.join(SBIN))


def host_checks(
    *, state_dir: str, vddk_libdir: str, protocols: Sequence[str], convert: bool, libguestfs_test: bool
) -> List[HostCheck]:
    """Every check of a conversion host (see the module doc of conversion_host_info)."""
    checks = [_libnbd(), _nbdkit(), _vddk(vddk_libdir), _state_dir(state_dir)]
    if convert:
        checks += _conversion(libguestfs_test)
    for protocol in protocols:
        client = tool(PROTOCOL_CLIENTS[protocol])
        missing = f"{PROTOCOL_CLIENTS[protocol]} is missing. {CONNECT_HINTS[protocol]}"
        checks.append(HostCheck(f"protocol {protocol}", bool(client), client or missing))
    return checks


def as_dicts(checks: List[HostCheck]) -> List[Dict[str, object]]:
    return [asdict(c) for c in checks]


def _libnbd() -> HostCheck:
    try:
        import nbd  # noqa: F401 - the system's binding, which the copy engine drives
    except ImportError:
        return HostCheck("libnbd", False, "libnbd's Python binding is missing (python3-libnbd, bindep.txt): run the"
                         " modules with a Python that sees the system's site-packages")  # fmt: skip
    return HostCheck("libnbd", True, "libnbd's Python binding imports")


def _nbdkit() -> HostCheck:
    nbdkit = tool("nbdkit")
    if not nbdkit:
        return HostCheck("nbdkit", False, "nbdkit is missing (bindep.txt)")
    # The collection's VDDK reader runs in nbdkit's Python plugin host.
    probe = subprocess.run([nbdkit, "--dump-plugin", "python"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return HostCheck("nbdkit", False, "nbdkit has no Python plugin (nbdkit-plugin-python / nbdkit-python-plugin)")
    return HostCheck("nbdkit", True, f"{nbdkit} with its Python plugin")


def _vddk(libdir: str) -> HostCheck:
    try:
        version = versions.vddk_version(libdir)
    except (ValueError, OSError):
        return HostCheck("vddk", False, f"no VDDK in {libdir} (lib64/libvixDiskLib.so.N): VMware does not let it be"
                         " redistributed; unpack it there (docs/conversion-host.md)")  # fmt: skip
    return HostCheck("vddk", True, f"VDDK {version or '(release not named by the library)'} in {libdir}")


def _state_dir(path: str) -> HostCheck:
    if not os.path.isdir(path) or not os.access(path, os.W_OK | os.X_OK):
        return HostCheck("state_dir", False, f"{path} is not a writable directory (the conversion_host role makes it)")
    mode = os.stat(path).st_mode & 0o777
    if mode & 0o077:
        return HostCheck("state_dir", False, f"{path} is mode {mode:o}: it holds resume journals, keep it 0700")
    return HostCheck("state_dir", True, f"{path}, mode {mode:o}")


def _conversion(libguestfs_test: bool) -> List[HostCheck]:
    v2v = accel.program(virt_v2v.V2V)
    checks = [HostCheck("virt-v2v-in-place", bool(v2v), v2v or f"{virt_v2v.V2V} is missing (virt-v2v, bindep.txt)")]
    why = accel.check_usable()
    qemu_ok = why is None
    checks.append(HostCheck("qemu", qemu_ok, why or f"{accel.qemu()} with {accel.accelerator().upper()}"))
    if libguestfs_test and qemu_ok:
        checks.append(_libguestfs())
    return checks


def _libguestfs() -> HostCheck:
    """libguestfs-test-tool, in the environment the conversion runs in: the appliance is built and booted."""
    test_tool = tool("libguestfs-test-tool")
    if not test_tool:
        return HostCheck("libguestfs", False, "libguestfs-test-tool is missing (libguestfs-tools / guestfs-tools)")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="xms-host-check-") as tmp:
        try:
            done = subprocess.run([test_tool], env=virt_v2v.appliance_env(tmp), capture_output=True, text=True,
                                  timeout=LIBGUESTFS_TEST_TIMEOUT_S, check=False)  # fmt: skip
        except subprocess.TimeoutExpired:
            return HostCheck(
                "libguestfs", False, f"libguestfs-test-tool did not finish in {LIBGUESTFS_TEST_TIMEOUT_S:.0f} s"
            )
    took = time.monotonic() - started
    if done.returncode != 0 or "TEST FINISHED OK" not in done.stdout + done.stderr:
        last = (done.stdout + done.stderr).strip().splitlines()[-3:]
        return HostCheck("libguestfs", False, f"libguestfs-test-tool failed: {' / '.join(last)}")
    return HostCheck("libguestfs", True, f"the appliance booted in {took:.0f} s ({accel.accelerator().upper()})")
