"""Nothing the conversion step starts outlives a killed module: the boot check's QEMU dies with the process
that started it (kill -9, as Ansible's async timeout or an operator does), as virt-v2v and virt-customize do
(the same parent-death signal, common/process.py). A real QEMU on a blank disk, in a child process that the
test kills; a blank disk makes virt-customize end by itself too soon to show anything."""

import os
import signal
import subprocess
import sys
import time

from ansible_collections.xms.warm_migration.plugins.module_utils.conversion.accel import QEMU

from ..processes import alive, command, descendants

COLLECTION_PARENT = sys.modules["ansible_collections"].__path__[0].rsplit("/ansible_collections", 1)[0]

BOOT_CHECK = """
import sys
from ansible_collections.xms.warm_migration.plugins.module_utils.conversion.boot_check import boot_check
boot_check([sys.argv[1]], macs=["52:54:00:00:00:01"], timeout_s=600)  # a blank disk: QEMU waits until killed
"""


def test_a_killed_module_leaves_no_boot_check_qemu_behind(tmp_path):
    script, program = BOOT_CHECK, os.path.basename(QEMU)
    disk = tmp_path / "blank.raw"
    with open(disk, "wb") as handle:
        handle.truncate(64 << 20)
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(disk)], env={**os.environ, "PYTHONPATH": COLLECTION_PARENT}
    )
    started = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and child.poll() is None:
        started = descendants(child.pid)
        if any(program in command(pid) for pid in started):
            break
        time.sleep(0.5)
    assert any(program in command(pid) for pid in started), "the program never started"
    time.sleep(2)  # let it settle in (the appliance's helpers start beside it)
    started = descendants(child.pid)
    child.send_signal(signal.SIGKILL)
    child.wait()
    deadline = time.monotonic() + 30
    while alive(started) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not alive(started), {pid: command(pid) for pid in alive(started)}
