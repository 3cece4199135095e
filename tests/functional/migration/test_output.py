"""What the operator reads in the playbook's output (and so in an AWX job's): progress lines while
a seed runs, without flooding; module results with no library noise on stderr, for a sync and a
cutover (an async job's result carries whatever its process wrote to stderr); one line per VM at
the end of the cutover.
"""

import re
import sys
import time

from ansible_collections.xms.warm_migration.plugins.module_utils.copy.extents import total_bytes
from ansible_collections.xms.warm_migration.plugins.module_utils.copy.nbd_source import plan_allocated
from ansible_collections.xms.warm_migration.plugins.module_utils.migration import store
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.context import MigrationContext

from ..vsphere.conftest import LAB_DIR, VDDK_LIBDIR
from .ansible_output import task_results
from .conftest import lab_cmd, wave_playbooks

VM = "lab-vm-1"  # the vm_1 fixture's


def playbooks(lab, tmp_path, data_path):
    return wave_playbooks(lab, tmp_path, {"wave1": {
        "hosts": {VM: {}},
        "vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                 "warm_migration_volume_type": "standard-ssd", "warm_migration_availability_zone": "az1",
                 "warm_migration_network_map": [{"source": "DC0_DVPG0", "network": "lab-net-a"}],
                 "cutover_conversion": {"skip": True}, "cutover_validation": {"enabled": False},
                 "seed_poll_interval": 1, "sync_poll_interval": 1,
                 "cutover_poll_interval": 1, "seed_progress_interval": 3},
    }}, data_path)  # fmt: skip


def data_bytes(lab, vm_name) -> int:
    """What a seed of the VM reads: its disks' data, as the lab's live exports map it."""
    return sum(
        total_bytes(plan_allocated(f"nbd+unix:///live-{key}?socket={LAB_DIR}/qsd/{vm_name}/nbd.sock"))
        for key in lab["vms"][vm_name]["disks"]
    )


def test_a_long_seed_shows_its_progress_every_few_seconds_without_flooding(lab, tmp_path, vm_1):
    # The record's progress is refreshed every 10 s (the heartbeat): a seed capped to last ~25 s,
    # whatever the earlier tests left on the disks, is reported at least twice.
    limit = max(64 << 10, data_bytes(lab, VM) // 25)
    run = playbooks(lab, tmp_path, {"vddk_libdir": VDDK_LIBDIR, "bandwidth_limit": limit})
    started = time.monotonic()
    done = run("seed")
    took = time.monotonic() - started
    lines = re.findall(rf"^{VM}: seeding (\S+ \S+) of (\S+ \S+) \((\d+)%\) at \S+ \S+/s(, ETA .+)?$", done.stdout, re.M)
    assert len(lines) >= 2, done.stdout[-4000:]
    assert len(lines) <= took / 3 + 1  # at most one a progress interval
    percents = [int(p) for _d, _t, p, _e in lines]
    assert percents == sorted(percents) and len(set(percents)) == len(percents)  # only what is new
    assert any(eta for *_x, eta in lines)


def test_a_sync_and_a_cutover_leave_nothing_on_stderr(lab, tmp_path, vsphere, openstack, vm_1):
    """Both copy: the guest writes before each, so volumes are attached through os-brick (whose
    connector probes NVMe and logs it) and nbdkit runs."""
    run = playbooks(lab, tmp_path, {"vddk_libdir": VDDK_LIBDIR})
    run("seed")
    key = str(store.load(openstack, MigrationContext.read(vsphere, vm_1).migration_id).disks[0].disk_key)
    env = {"ANSIBLE_CALLBACK_RESULT_FORMAT": "json"}
    lab_cmd("write", VM, key, "4", str(256 << 10))
    sync = run("sync", "-v", env_extra=env)
    lab_cmd("write", VM, key, "8", str(256 << 10))
    cutover = run("cutover", "-v", env_extra=env)
    for name, done in (("sync", sync), ("cutover", cutover)):
        jobs = [r for _host, r in task_results(done.stdout) if r.get("finished") and "ansible_job_id" in r]
        assert jobs, f"no finished job in the {name} output: {done.stdout[-3000:]}"
        copied = [r.get("bytes_copied") or (r.get("final_sync") or {}).get("bytes") for r in jobs]
        assert any(copied), f"the {name} copied nothing: os-brick and nbdkit did not run"
        for job in jobs:
            assert job.get("stderr", "") == "", f"{name} wrote to stderr: {job['stderr'][:2000]}"
            assert not job.get("warnings"), f"{name} warned: {job['warnings']}"
    assert re.search(rf'"{VM}: down \d+ s, instance [0-9a-f-]{{36}} \(guest shutdown', cutover.stdout)
