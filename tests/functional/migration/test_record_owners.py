"""One owner per field of the migration record, ownership held from the first step to the last, a heartbeat
that neither stalls nor aborts the work it reports on (both labs)."""

import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import pytest

from ansible_collections.xms.warm_migration.plugins.module_utils.migration import disk_copies, heartbeat, store
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.context import MigrationContext
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.cutover import run_cutover
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.info import set_schedule
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.sync import run_sync
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere import cbt

from ..openstack.conftest import CLOUDS
from .conftest import assert_volumes_equal_source, data_cutover, start

COLLECTIONS = sys.modules["ansible_collections"].__path__[0].rsplit("/ansible_collections", 1)[0]
OTHER_HOST = f"""
import socket, sys, os
sys.path.insert(0, {COLLECTIONS!r})
socket.sethostname("other-conversion-host")  # in its own UTS namespace (unshare -u): another host
os.environ["OS_CLIENT_CONFIG_FILE"] = {CLOUDS!r}
from ansible_collections.xms.warm_migration.plugins.module_utils.migration import lock, ownership, record, store
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.errors import MigrationBusyError
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack.client import OpenStackClient
lock.boot_id = lambda: "0th3rb00t000"  # another machine's kernel
record.HEARTBEAT_STALE_S = float(sys.argv[3])  # a staleness limit the test can outlast
state = store.load(OpenStackClient.connect(cloud="xms-lab"), sys.argv[1])
print(state.phase.value)
try:
    ownership.ensure_free(state, ownership.Observations(sys.argv[2]))
except MigrationBusyError:
    sys.exit(3)
"""


def another_host_sees(migration_id: str, state_dir, stale_after_s: float = 600) -> tuple:
    """What the sync or cutover of another conversion host (whose state directory is ``state_dir``: what it
    has seen of the record's heartbeats before) would decide right now: (may take it, the phase it read)."""
    argv = ["unshare", "-u", sys.executable, "-c", OTHER_HOST, migration_id, str(state_dir), str(stale_after_s)]
    run = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert run.returncode in (0, 3), run.stderr[-2000:]
    return run.returncode == 0, run.stdout.strip()


def another_host_may_take_it(migration_id: str, state_dir, stale_after_s: float = 600) -> bool:
    return another_host_sees(migration_id, state_dir, stale_after_s)[0]


def in_background(call):
    """Run ``call`` in a thread; returns (thread, box) where box gets "result" or "error"."""
    box = {}

    def body():
        try:
            box["result"] = call()
        except Exception as err:  # handed to the test, which asserts on it
            box["error"] = err

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, box


@pytest.fixture
def beat_often(monkeypatch):
    monkeypatch.setattr(heartbeat, "EVERY_S", 0.5)


def test_a_pause_set_while_a_sync_runs_survives_the_sync(vsphere, source, openstack, target, settings, beat_often):
    migration_id = start(vsphere, source, openstack, target).migration_id
    # The seed here: os-brick's first attach must happen on the main thread (as in a module), or
    # the worker thread that made it never ends. Then a full resync, throttled, to pause during.
    run_sync(MigrationContext.read(vsphere, source, openstack), settings)
    settings.bandwidth_limit, settings.force_full = 16 << 20, True  # seconds of copy (80 MiB of disks)
    thread, box = in_background(lambda: run_sync(MigrationContext.read(vsphere, source, openstack), settings))
    while thread.is_alive() and not store.load(openstack, migration_id).is_busy():
        time.sleep(0.2)
    changed, _before, _after = set_schedule(openstack, store.load(openstack, migration_id), paused=True,
                                            cadence="hourly", check_mode=False)  # fmt: skip
    assert changed and thread.is_alive(), "the pause must land while the sync runs"
    thread.join(300)
    assert box.get("result") is not None, box.get("error")
    state = store.load(openstack, migration_id)
    assert (state.paused, state.cadence, state.phase, state.seeded) == (True, "hourly", "ready", True)


def test_a_sync_holds_the_migration_through_every_long_phase(
    vsphere, source, openstack, target, settings, beat_often, monkeypatch, tmp_path
):
    """Each phase is made longer than the other host's staleness limit: only the timer's beats keep it off.

    The other host looks once per phase, each look longer than its limit after the one before: a
    beat it saw unchanged since its last look would let it take the migration over. The record keeps
    whole seconds, so a beat every 0.5 s changes the value it sees at least once a second."""
    stale_s = 3.0
    other_host = tmp_path / "other-host-state"
    migration_id = start(vsphere, source, openstack, target).migration_id
    verdicts = []

    def long_phase(name):
        time.sleep(stale_s + 1.5)
        verdicts.append((name, another_host_may_take_it(migration_id, other_host, stale_s)))

    def lengthened(name, call):
        def wrapper(*args, **kwargs):
            result = call(*args, **kwargs)
            long_phase(name)
            return result

        return wrapper

    snapshot = cbt.sync_snapshot

    @contextmanager
    def lengthened_snapshot(*args, **kwargs):
        with snapshot(*args, **kwargs) as snap:
            long_phase("snapshot taken")
            yield snap
            long_phase("before the snapshot's removal")
        long_phase("snapshot removed")

    monkeypatch.setattr(cbt, "remove_orphan_snapshots", lengthened("orphan removal", cbt.remove_orphan_snapshots))
    monkeypatch.setattr(cbt, "sync_snapshot", lengthened_snapshot)
    monkeypatch.setattr(disk_copies, "copy_extents", lengthened("copy", disk_copies.copy_extents))
    monkeypatch.setattr(disk_copies, "verify_extents", lengthened("verify", disk_copies.verify_extents))
    settings.verify = True
    assert run_sync(MigrationContext.read(vsphere, source, openstack), settings).kind == "seed"
    names = [name for name, _taken in verdicts]
    assert {"orphan removal", "snapshot taken", "copy", "verify", "snapshot removed"} <= set(names), names
    assert not any(taken for _name, taken in verdicts), [name for name, taken in verdicts if taken]
    assert another_host_may_take_it(migration_id, other_host, stale_s)  # and once the sync is done, it may


def test_a_failing_heartbeat_write_neither_stalls_nor_aborts_the_copy(
    vsphere, source, openstack, target, settings, beat_often, monkeypatch
):
    failed = []

    def cinder_answers_503(_client, _state):
        """Mock of a metadata write that Cinder fails (a 5xx), the branch the lab's Cinder never takes."""
        failed.append(time.monotonic())
        raise RuntimeError("503 Service Unavailable")

    monkeypatch.setattr(store, "save_heartbeat", cinder_answers_503)
    migration_id = start(vsphere, source, openstack, target).migration_id
    settings.bandwidth_limit = 4 << 20  # about five seconds of seed: several beats fail on the way
    seed = run_sync(MigrationContext.read(vsphere, source, openstack), settings)
    assert seed.kind == "seed" and len(failed) >= 2
    assert any("progress report(s) to the migration record failed" in w for w in seed.warnings)
    assert_volumes_equal_source(vsphere, source, openstack, store.load(openstack, migration_id))


def test_the_cutover_holds_the_migration_from_its_first_step_to_its_last(
    vsphere, vm_1, openstack, target, settings, beat_often, tmp_path
):
    migration_id = start(vsphere, vm_1, openstack, target).migration_id
    run_sync(MigrationContext.read(vsphere, vm_1, openstack), settings)
    cutover = data_cutover(settings, instance_timeout=300)
    thread, box = in_background(lambda: run_cutover(MigrationContext.read(vsphere, vm_1, openstack), target, cutover))
    seen, other_host = [], []
    while thread.is_alive():
        state = store.load(openstack, migration_id)
        seen.append((state.phase, state.cutover_step, state.is_busy()))
        if state.phase == "cutover" and len(other_host) < 3:
            # The other host reads the record a moment later (its start takes a while): by then the cutover
            # may have ended and let go, which is no verdict on the cutover holding it.
            taken, phase_seen = another_host_sees(migration_id, tmp_path / "other")
            other_host.append((state.cutover_step, taken and phase_seen == "cutover"))
        time.sleep(0.2)
    assert box.get("result") is not None, box.get("error")
    during = [s for s in seen if s[0] == "cutover"]
    assert during and all(busy for _phase, _step, busy in during), seen
    assert "converted" in {step for _phase, step, _busy in during}  # after the nested final sync too
    assert other_host and not any(taken for _step, taken in other_host), other_host
    assert not store.load(openstack, migration_id).is_busy()
