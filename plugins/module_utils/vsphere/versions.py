"""Which VDDK can read which vSphere: both ends' releases, compared before anything changes.

VMware supports each VDDK release against its own vSphere release and the two before it. Outside
that window the library may well log in and answer the metadata calls and then fail to read: VDDK 9
against ESXi 6.x does exactly that. A migration that finds out in the middle of its seed has
already taken a snapshot and spent hours, so preflight compares the releases instead: VDDK's from
the file name VMware gives its library, vCenter's and the VM's ESXi host's from the API.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import List, Optional, Tuple

from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere import vddk_reader
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere.inventory import properties

# The vSphere releases, oldest first; a VDDK release serves its own and the two before it.
RELEASES: Tuple[Tuple[int, int], ...] = ((6, 0), (6, 5), (6, 7), (7, 0), (8, 0), (9, 0))
WINDOW = 3

Release = Tuple[int, int]


@dataclass(frozen=True)
class SourceVersions:
    """The releases of the vCenter and of the ESXi host that runs the VM, as the API reports them."""

    vcenter: str
    esxi: str
    host: str


@dataclass(frozen=True)
class VddkVerdict:
    ok: bool
    message: str
    hint: str = ""


def release_of(version: str) -> Optional[Release]:
    """``8.0.3`` -> (8, 0); None for what is not a version."""
    match = re.match(r"(\d+)\.(\d+)", version or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


def read_versions(client, vm) -> SourceVersions:
    """vCenter's release (read now, not from the session's start) and that of the VM's current host."""
    about = client.si.RetrieveContent().about
    host = properties(client, vm, ["runtime.host"])["runtime.host"]
    facts = properties(client, host, ["name", "config.product"])  # not all of config: a host's is large
    return SourceVersions(vcenter=about.version, esxi=facts["config.product"].version, host=facts["name"])


def vddk_version(libdir: str) -> Optional[str]:
    """The version VDDK's library file names (``lib64/libvixDiskLib.so.8.0.3``, which ``.so.8`` links to).

    ValueError when ``libdir`` holds no VDDK; None when only the major is known and it does not name a
    single release (VDDK 6 came for vSphere 6.0, 6.5 and 6.7)."""
    name = os.path.basename(os.path.realpath(vddk_reader.library_path(libdir)))
    version = name.split(".so.", 1)[1]
    if re.fullmatch(r"\d+\.\d+(\.\d+)*", version):
        return version
    return f"{version}.0" if version.isdigit() and int(version) >= 7 else None


def served_by(vddk: Release) -> List[Release]:
    """The vSphere releases a VDDK release serves: its own and the two before it, oldest first."""
    known = sorted(set(RELEASES) | {vddk})
    at = known.index(vddk)
    return known[max(0, at - WINDOW + 1) : at + 1]


def vddk_verdict(libdir: str, source: SourceVersions) -> VddkVerdict:
    """Can the VDDK in ``libdir`` read this VM's disks from this vCenter and ESXi host?"""
    try:
        version = vddk_version(libdir)
    except ValueError as err:
        return VddkVerdict(False, str(err), "Unpack VMware's VDDK there (see docs/conversion-host.md), or point"
                           " vddk_libdir at it")  # fmt: skip
    vcenter, esxi = release_of(source.vcenter), release_of(source.esxi)
    where = f"vCenter {source.vcenter} and ESXi {source.esxi} (host '{source.host}')"
    if version is None or vcenter is None or esxi is None:
        return VddkVerdict(True, f"cannot tell whether this VDDK serves {where}: check VMware's compatibility"
                           " notes for it")  # fmt: skip
    vddk = release_of(version)
    window = served_by(vddk)
    outside = [f"{name} {text}" for name, text, rel in (("vCenter", source.vcenter, vcenter),
                                                        ("ESXi", source.esxi, esxi)) if rel not in window]  # fmt: skip
    if not outside:
        return VddkVerdict(True, f"VDDK {version} serves {where}")
    return VddkVerdict(False, f"VDDK {version} in {libdir} cannot serve {' or '.join(outside)} (host"
                       f" '{source.host}'): it serves vSphere {_names(window)}", _what_fits(vcenter, esxi))  # fmt: skip


def _what_fits(vcenter: Release, esxi: Release) -> str:
    fits = [rel for rel in RELEASES if vcenter in served_by(rel) and esxi in served_by(rel)]
    if fits or esxi in served_by(vcenter):  # or a release newer than RELEASES knows
        return f"Put VDDK {_names(fits or [vcenter])} in vddk_libdir (see docs/conversion-host.md)"
    if esxi < vcenter:
        return (f"No VDDK release serves both: move the VM to a host on ESXi {_names(served_by(vcenter)[:1])} or"
                f" later (or upgrade its host), then use VDDK {_names([vcenter])} in vddk_libdir")  # fmt: skip
    return "No VDDK release serves both: vCenter must be at least the ESXi host's release; upgrade vCenter"


def _names(releases: List[Release]) -> str:
    names = [f"{major}.{minor}" for major, minor in releases]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
