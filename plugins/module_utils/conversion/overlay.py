"""The conversion's copy-on-write layer: virt-v2v never writes the replicas until everything succeeded.

virt-v2v-in-place, the scripts and the boot check work on a qcow2 overlay per volume whose backing
file is the volume (its attached device, or the format layer's plaintext view): what they write
stays in the overlays, on the conversion host. Only once all of them succeeded are the overlays
committed into the volumes (``qemu-img commit``: the overlay's clusters, nothing else). A failed or
killed conversion leaves the replicas exactly as the last sync wrote them: a rerun converts again
from clean volumes, and a rollback's next sync is incremental.

The overlays live in ``<state_dir>/overlays/<migration id>`` (0700: they hold guest data), one
conversion per migration at a time (the record's hold); a killed run's overlays are removed by the
next run of the cutover or its rollback.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from contextlib import contextmanager
from typing import Iterator, List, Sequence

from ansible_collections.xms.warm_migration.plugins.module_utils.common.process import dies_with_parent
from ansible_collections.xms.warm_migration.plugins.module_utils.conversion.errors import ConversionError

QEMU_IMG = "qemu-img"
FORMAT = "qcow2"


def overlay_dir(state_dir: str, migration_id: str) -> str:
    return os.path.join(state_dir, "overlays", migration_id)


def discard(state_dir: str, migration_id: str) -> None:
    """Remove what a conversion of the migration left on this host (a killed run's overlays)."""
    shutil.rmtree(overlay_dir(state_dir, migration_id), ignore_errors=True)


@contextmanager
def overlays(devices: Sequence[str], state_dir: str, migration_id: str) -> Iterator[List[str]]:
    """Yield a qcow2 overlay per device of ``devices`` (in order); removed on the way out."""
    discard(state_dir, migration_id)
    work = overlay_dir(state_dir, migration_id)
    os.makedirs(work, mode=0o700)
    try:
        paths = []
        for index, device in enumerate(devices):
            path = os.path.join(work, f"disk{index}.qcow2")
            _qemu_img(["create", "-q", "-f", FORMAT, "-F", "raw", "-b", os.path.abspath(device), path])
            paths.append(path)
        yield paths
    finally:
        discard(state_dir, migration_id)


def commit(paths: Sequence[str]) -> None:
    """Write each overlay's clusters into its volume (the overlay's backing file)."""
    for path in paths:
        _qemu_img(["commit", "-q", "-d", "-f", FORMAT, path])


def _qemu_img(argv: List[str]) -> None:
    try:
        done = subprocess.run(
            [QEMU_IMG, *argv],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
            preexec_fn=dies_with_parent(),  # pylint: disable=subprocess-popen-preexec-fn
        )
    except FileNotFoundError:
        raise ConversionError(
            f"{QEMU_IMG} is not installed on the conversion host", hint="Install qemu-utils"
        ) from None
    if done.returncode != 0:
        raise ConversionError(
            f"{QEMU_IMG} {argv[0]} failed: {done.stderr.strip()[-500:]}",
            hint="Rerun the cutover (it resumes at the conversion), or roll back with state=rolled_back",
        )
