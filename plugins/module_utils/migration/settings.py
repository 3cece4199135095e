"""How a sync runs on this conversion host: the module's data-path parameters, and the copy engine's options
they give for a number of disks copied at once."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, Optional

from ansible_collections.xms.warm_migration.plugins.module_utils.copy.copier import (
    CopyOptions,
    RateCap,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere.datapath import Reader

# Disks of one VM copied at once. vSphere serves each disk at about 1 Gbps over NFC, so a VM's
# speed comes from reading its disks side by side; each copy holds its own buffer pool (32 MiB).
PARALLEL_DISKS = 4


@dataclass
class SyncSettings:
    """How to run a sync on this conversion host (module parameters, already validated)."""

    state_dir: str
    vddk_libdir: str = ""
    vddk_transports: Optional[str] = None
    reader: Reader = Reader.AUTO
    nfs_mounts: Dict[str, str] = field(default_factory=dict)  # datastore name: where it is mounted on this host
    attach_mode: str = "brick"
    conversion_server: Optional[str] = None
    quiesce: bool = False
    force_full: bool = False
    only_when_due: bool = False
    bandwidth_limit: Optional[int] = None
    verify: bool = False
    parallel_disks: int = PARALLEL_DISKS


def connections_per_copy(at_once: int) -> int:
    """NBD connections for each of ``at_once`` disk copies: this host's cores shared out among them.

    Each connection past the first is one more Python thread in this process; with more of them
    than cores they convoy on the GIL: eight copies (two per process) on two cores spent 2.2 times
    nbdcopy's CPU per byte with four connections each, about nbdcopy's with one
    (bench/wave_bench.py). A lone disk on a large host still gets the engine's four."""
    return max(1, min(CopyOptions.connections, (os.cpu_count() or 1) // max(1, at_once)))


def copy_options(settings: SyncSettings, at_once: int = 1) -> CopyOptions:
    """The engine's options for ``at_once`` disk copies of one run: every disk draws on one ``bandwidth_limit``,
    and this host's cores are shared out among them."""
    return CopyOptions(
        connections=connections_per_copy(at_once),
        rate_cap=RateCap(settings.bandwidth_limit) if settings.bandwidth_limit else None,
    )
