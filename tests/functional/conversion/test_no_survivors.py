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

COLLECTION_PARENT = sys.modules["ansible_collections"].__path__[0].rsplit("/ansible_collections", 1)[0]

BOOT_CHECK = """
import sys
from ansible_collections.xms.warm_migration.plugins.module_utils.conversion.boot_check import boot_check
boot_check([sys.argv[1]], macs=["52:54:00:00:00:01"], timeout_s=600)  # a blank disk: QEMU waits until killed
"""


def descendants(pid: int) -> set:
    """Every process below ``pid`` now (from /proc)."""
    children: dict = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pids: set) -> set:
    """Those of ``pids`` that still run (a zombie has ended)."""
    running = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as handle:
                if handle.read().rsplit(")", 1)[1].split()[0] != "Z":
                    running.add(pid)
        except OSError:
            continue
    return running


def command(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


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
