"""A VM's disks copied at once, and a sync that pays only for what changed (issue: waves at scale).

lab-vm-2 has two disks (48 and 32 MiB); what follows proves on the labs that they are copied side
by side from one snapshot, that a failure or a kill -9 part-way is resumed disk by disk, and that
a sync of an idle VM attaches nothing (Cinder's own table of attachments says so).
"""

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Set, Tuple

import pytest

from ansible_collections.xms.warm_migration.plugins.module_utils.copy.errors import ReadError
from ansible_collections.xms.warm_migration.plugins.module_utils.copy.extents import total_bytes
from ansible_collections.xms.warm_migration.plugins.module_utils.copy.journal import read_journal
from ansible_collections.xms.warm_migration.plugins.module_utils.migration import disk_copies, store
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.context import MigrationContext
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.sync import run_sync

from ..openstack.conftest import CLOUDS
from .conftest import assert_volumes_equal_source, lab_cmd, start

HERE = os.path.dirname(os.path.abspath(__file__))
COLLECTION_PARENT = sys.modules["ansible_collections"].__path__[0].rsplit("/ansible_collections", 1)[0]


def attachments_of(volume_ids) -> Set[Tuple[str, str]]:
    """Every attachment Cinder made of ``volume_ids``, deleted ones included (its own table), as
    (attachment id, volume id). By id, not by time: its timestamps are whole seconds, and the
    comparison just before a sync attaches the volumes within the same second."""
    ids = ",".join(f"'{v}'" for v in volume_ids)
    query = f"SELECT id, volume_id FROM volume_attachment WHERE volume_id IN ({ids})"
    done = subprocess.run(["mysql", "-uroot", "-N", "cinder", "-e", query], capture_output=True, text=True, check=True)
    return {tuple(line.split("\t")) for line in done.stdout.splitlines()}


def journal_progress(state_dir, migration_id) -> dict:
    """Bytes each disk's resume journal records as flushed, by journal file name."""
    found = {}
    for path in (state_dir / migration_id).glob("*.journal"):
        recorded = read_journal(str(path))
        if recorded:
            found[path.name] = total_bytes(recorded.done)
    return found


def wait_for_both_disks_to_journal(state_dir, migration_id, alive, child=None) -> None:
    deadline = time.monotonic() + 120
    while alive() and time.monotonic() < deadline:
        progress = journal_progress(state_dir, migration_id)
        if len(progress) == 2 and all(progress.values()):
            return
        time.sleep(0.1)
    said = child.communicate()[0][-3000:] if child and child.poll() is not None else ""
    pytest.fail(f"the disks did not both record progress: {journal_progress(state_dir, migration_id)} {said}")


@pytest.fixture
def often_checkpointed(monkeypatch):
    """A test setting: journals every half second (not every 30 s), so a fault a few seconds in lands
    after each disk recorded progress, as one an hour into a real seed does."""
    options = disk_copies.copy_options
    monkeypatch.setattr(
        disk_copies,
        "copy_options",
        lambda *args, **kw: dataclasses.replace(options(*args, **kw), checkpoint_seconds=0.5),
    )


def watching_attachments(openstack, volume_ids, call):
    """``call()``'s result, and how many of ``volume_ids`` Cinder showed attached every 0.2 s meanwhile."""
    attached_at_once, done = [], threading.Event()

    def watch_cinder():
        while not done.is_set():
            volumes = [openstack.conn.block_storage.get_volume(v) for v in volume_ids]
            attached_at_once.append(sum(1 for v in volumes if v.attachments))
            done.wait(0.2)

    watcher = threading.Thread(target=watch_cinder, daemon=True)
    watcher.start()
    try:
        return call(), attached_at_once
    finally:
        done.set()
        watcher.join()


def test_the_disks_are_copied_at_once_and_an_idle_sync_attaches_nothing(vsphere, source, openstack, target, settings):
    migration_id = start(vsphere, source, openstack, target).migration_id
    volume_ids = [d.volume_id for d in store.load(openstack, migration_id).disks]
    settings.bandwidth_limit = 2 << 20  # a few seconds of seed, shared by both disks
    seed, attached_at_once = watching_attachments(
        openstack, volume_ids, lambda: run_sync(MigrationContext.read(vsphere, source, openstack), settings)
    )
    assert seed.kind == "seed" and max(attached_at_once) == 2, attached_at_once
    assert seed.snapshot_s >= max(d["stats"]["elapsed_s"] for d in seed.disks)  # one snapshot held for all copies
    assert_volumes_equal_source(vsphere, source, openstack, store.load(openstack, migration_id))

    before = attachments_of(volume_ids)
    idle = run_sync(MigrationContext.read(vsphere, source, openstack), settings)
    assert idle.kind == "incremental" and not idle.changed and idle.bytes_copied == 0
    assert attachments_of(volume_ids) == before  # Cinder made no attachment: nothing was connected
    assert all("stats" not in d for d in idle.disks)  # and no copy engine (nor nbdkit) ran
    state = store.load(openstack, migration_id)
    assert state.sync_count == 2 and all(d.change_id and not d.pending_change_id for d in state.disks)
    # The query does see attachments: a change in one disk attaches that disk's volume, and only it.
    before = attachments_of(volume_ids)
    small = smaller_disk(state)
    lab_cmd("write", "lab-vm-2", str(small.disk_key), "4", str(256 << 10))
    changed = run_sync(MigrationContext.read(vsphere, source, openstack), settings)
    written = small.volume_id
    made = attachments_of(volume_ids) - before
    assert changed.changed and [volume for _id, volume in made] == [written]
    assert_volumes_equal_source(vsphere, source, openstack, store.load(openstack, migration_id))


def test_a_seed_holds_no_more_volumes_attached_than_parallel_disks(vsphere, source, openstack, target, settings):
    """A VM with more disks than parallel_disks (here 2 and 1): one volume attached at a time, and still equal."""
    migration_id = start(vsphere, source, openstack, target).migration_id
    volume_ids = [d.volume_id for d in store.load(openstack, migration_id).disks]
    settings.bandwidth_limit, settings.parallel_disks = 4 << 20, 1
    seed, attached_at_once = watching_attachments(
        openstack, volume_ids, lambda: run_sync(MigrationContext.read(vsphere, source, openstack), settings)
    )
    assert seed.kind == "seed" and max(attached_at_once) == 1 and len(volume_ids) == 2, attached_at_once
    assert_volumes_equal_source(vsphere, source, openstack, store.load(openstack, migration_id))


def test_one_disk_failing_stops_the_others_and_the_rerun_resumes_every_disk(
    vsphere, source, openstack, target, settings, lab, often_checkpointed
):
    """The source of the smaller disk (4 MiB of data) dies part-way (its NBD server is killed, as an NFC
    connection to a lost ESXi host goes); the larger one (16 MiB), still copying, is stopped and keeps
    what it flushed."""
    migration_id = start(vsphere, source, openstack, target).migration_id
    small = smaller_disk(store.load(openstack, migration_id))
    whole = planned_per_disk(run_sync(MigrationContext.read(vsphere, source, openstack), settings, check_mode=True))
    settings.bandwidth_limit = 1 << 20
    failure = []
    seed = threading.Thread(
        target=lambda: failure.append(_raised(run_sync, MigrationContext.read(vsphere, source, openstack), settings))
    )
    seed.start()
    state_dir = Path(settings.state_dir)
    wait_for_both_disks_to_journal(state_dir, migration_id, seed.is_alive)
    image = lab["vms"]["lab-vm-2"]["disks"][str(small.disk_key)]["image"]
    subprocess.run(["pkill", "-KILL", "-f", f"qemu-nbd .*--load-snapshot.*{image}"], check=True)
    seed.join(120)
    err = failure[0]
    state = store.load(openstack, migration_id)
    assert isinstance(err, ReadError) and f"disk {small.label}:" in str(err), err
    assert not state.seeded and all(d.pending_change_id for d in state.disks) and state.last_error
    assert state.failed_syncs == 1  # what the monitoring's XmsWarmMigrationSyncsFailing counts
    saved = journal_progress(state_dir, migration_id)
    assert len(saved) == 2 and all(saved.values()), saved

    rerun = run_sync(MigrationContext.read(vsphere, source, openstack), settings)
    assert_resumed(rerun, whole)
    assert rerun.state.failed_syncs == 0 and store.load(openstack, migration_id).failed_syncs == 0
    assert_volumes_equal_source(vsphere, source, openstack, store.load(openstack, migration_id))


def test_a_sync_killed_while_its_disks_copy_resumes_every_disk(vsphere, source, openstack, target, settings, lab):
    migration_id = start(vsphere, source, openstack, target).migration_id
    whole = planned_per_disk(run_sync(MigrationContext.read(vsphere, source, openstack), settings, check_mode=True))
    state_dir = Path(settings.state_dir)
    lab_json = os.path.join(os.environ["XMS_LAB_DIR"], "vsphere", "lab.json")
    child = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "sync_child.py"), lab_json, CLOUDS, "lab-vm-2",
         str(state_dir), str(1 << 20)],
        env={**os.environ, "PYTHONPATH": COLLECTION_PARENT}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    wait_for_both_disks_to_journal(state_dir, migration_id, lambda: child.poll() is None, child)
    child.send_signal(signal.SIGKILL)
    child.wait()
    state = store.load(openstack, migration_id)
    assert not state.seeded and all(d.pending_change_id for d in state.disks)

    rerun = run_sync(MigrationContext.read(vsphere, source, openstack), settings)
    assert_resumed(rerun, whole)
    assert_volumes_equal_source(vsphere, source, openstack, store.load(openstack, migration_id))


def smaller_disk(state):
    return min(state.disks, key=lambda d: d.capacity)


def planned_per_disk(outcome) -> dict:
    return {d["disk_key"]: d["planned_bytes"] for d in outcome.disks}


def assert_resumed(rerun, whole) -> None:
    """Every disk resumed: it copies less than its whole seed (what its journal held is not copied again)."""
    assert rerun.kind == "resume"
    again = planned_per_disk(rerun)
    assert all(again[key] < whole[key] for key in whole), (again, whole)


def _raised(func, *args):
    try:
        func(*args)
    except Exception as err:  # the test looks at it
        return err
    return None
