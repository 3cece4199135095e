"""What one disk's sync copies (plan_disk), for the events a production source throws at it; what a
scheduled sync skips.

``changed_since`` and ``remaining`` stand in for vSphere's changed areas and the resume journal:
named fakes returning what those would say, so every branch is reached in milliseconds.
"""

import os
import threading
from types import SimpleNamespace

import pytest
from test_ownership import FakeCinder, a_migration  # the record's in-memory Cinder

from ansible_collections.xms.warm_migration.plugins.module_utils.copy.extents import Extent
from ansible_collections.xms.warm_migration.plugins.module_utils.migration import disk_copies, lock, settings, sync
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.disk_copies import busy_seconds
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.errors import (
    MigrationBusyError,
    MigrationNotFoundError,
    PhaseError,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.plan import SyncPlan, plan_disk
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.record import DiskState, Phase, utcnow
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere.errors import CbtResetError

GiB, MiB = 1 << 30, 1 << 20
CHANGED = [Extent(4 * MiB, MiB)]


def fake_changed_since(since):
    """Mock of vs_cbt.changed_extents: the allocated areas for None, CHANGED for a known id, a reset otherwise."""
    if since is None:
        return [Extent(0, 8 * MiB)]
    if since.startswith("epoch/"):
        return list(CHANGED)
    raise CbtResetError(f"change id {since} is from another epoch")


def plan(disk, capacity=GiB, *, force_full=False, needs_full=False, remaining=None):
    return plan_disk(disk, capacity=capacity, force_full=force_full, needs_full=needs_full,
                     changed_since=fake_changed_since, remaining=lambda: remaining)  # fmt: skip


def disk(**fields):
    return DiskState(disk_key=2000, volume_id="vol", index=0, capacity=GiB, **fields)


def test_a_seed_reads_what_the_source_holds_and_zeroes_the_rest_of_the_volume():
    """A new volume is not assumed to read as zero: the engine zeroes (or checks) the unallocated rest."""
    seed = plan(disk())
    assert (seed.kind, seed.extents, seed.unallocated) == (
        "seed",
        [Extent(0, 8 * MiB)],
        [Extent(8 * MiB, GiB - 8 * MiB)],
    )
    assert (seed.data_bytes, seed.bytes) == (8 * MiB, GiB)


def test_an_incremental_copies_what_changed():
    assert plan(disk(change_id="epoch/3")).extents == CHANGED


def test_a_cbt_reset_copies_the_whole_disk_with_a_warning():
    whole = plan(disk(change_id="old/3"))
    assert (whole.kind, whole.extents) == ("full_resync", [Extent(0, GiB)])
    assert "CBT was reset" in whole.warning


@pytest.mark.parametrize(("old", "grown"), [(GiB, GiB + MiB + 512 * 1024), (3 << 40, (3 << 40) + GiB + 4096)])
def test_a_grown_disk_adds_its_new_area_to_the_incremental(old, grown):
    """Sizes that are no whole number of GiB, and disks past 2 TiB."""
    recorded = DiskState(disk_key=2000, volume_id="vol", index=0, capacity=old, change_id="epoch/3")
    incremental = plan(recorded, grown)
    assert incremental.kind == "incremental"
    assert incremental.extents == [CHANGED[0], Extent(old, grown - old)]


def test_a_disk_smaller_than_recorded_was_replaced_and_is_copied_whole_at_its_size():
    smaller = plan(disk(change_id="epoch/3"), 512 * MiB)
    assert (smaller.kind, smaller.extents) == ("full_resync", [Extent(0, 512 * MiB)])
    assert "replaced" in smaller.warning


def test_the_operators_full_resync_never_resumes():
    forced = plan(disk(change_id="epoch/3", pending_change_id="epoch/4"), force_full=True, remaining=[Extent(0, MiB)])
    assert forced.extents == [Extent(0, GiB)]


def test_a_full_resync_the_record_asks_for_resumes_after_an_interruption():
    """After a rollback of a conversion: the first full copy is killed; the rerun copies what it had left."""
    first = plan(disk(change_id="epoch/3"), needs_full=True)
    assert first.kind == "full_resync"
    left = [Extent(512 * MiB, 512 * MiB)]
    resumed = plan(disk(change_id="epoch/3", pending_change_id="epoch/4"), needs_full=True,
                   remaining=left)  # fmt: skip
    assert resumed.kind == "resume" and resumed.extents == [CHANGED[0], *left]


def test_one_plan_says_the_kind_and_whether_anything_changes_for_run_and_check_mode():
    seed, nothing = plan(disk()), plan(disk(change_id="epoch/3"), remaining=None)
    nothing.extents = []  # an incremental where nothing changed
    resume = plan(disk(change_id="epoch/3", pending_change_id="epoch/4"), remaining=[Extent(0, MiB)])
    whole = plan(disk(change_id="epoch/3"), force_full=True)
    assert (SyncPlan([(disk(), seed)]).kind, SyncPlan([(disk(), seed)]).changes) == ("seed", True)
    assert (SyncPlan([(disk(), nothing)]).kind, SyncPlan([(disk(), nothing)]).changes) == ("incremental", False)
    assert SyncPlan([(disk(), nothing), (disk(), resume)]).kind == "resume"
    assert SyncPlan([(disk(), resume), (disk(), whole)]).kind == "full_resync"


def test_the_copy_time_of_disks_copied_at_once_is_the_time_any_of_them_ran():
    """It feeds the projection's copy rate: overlapping copies count once, gaps not at all."""
    assert busy_seconds([]) == 0
    assert busy_seconds([(0.0, 10.0), (2.0, 6.0)]) == 10.0
    assert busy_seconds([(0.0, 4.0), (3.0, 8.0), (10.0, 11.0)]) == 9.0


def test_the_cores_are_shared_out_among_the_copies_of_a_sync(monkeypatch):
    """More copy threads than cores convoy on the GIL: two disks on two cores get one connection each."""
    monkeypatch.setattr(settings.os, "cpu_count", lambda: 2)
    assert [settings.connections_per_copy(n) for n in (1, 2, 4)] == [2, 1, 1]
    monkeypatch.setattr(settings.os, "cpu_count", lambda: 16)
    assert [settings.connections_per_copy(n) for n in (1, 2, 4, 8)] == [4, 4, 4, 2]


def test_a_copy_thread_steps_back_alone_and_its_connections_with_it():
    seen = {}

    def copy_thread():
        disk_copies.lower_copy_priority()
        seen["copy"] = os.getpriority(os.PRIO_PROCESS, 0)
        connection = threading.Thread(target=lambda: seen.update(connection=os.getpriority(os.PRIO_PROCESS, 0)))
        connection.start()
        connection.join()

    before = os.getpriority(os.PRIO_PROCESS, 0)
    stepped_back = min(19, before + disk_copies.COPY_NICENESS)  # Linux's lowest priority is 19
    thread = threading.Thread(target=copy_thread)
    thread.start()
    thread.join()
    assert seen == {"copy": stepped_back, "connection": stepped_back}
    assert os.getpriority(os.PRIO_PROCESS, 0) == before  # the module's own thread keeps its priority


# A scheduled sync (only_when_due) over a wave: what an operator's run refuses, it skips with the reason.
# The record is FakeCinder's (see test_ownership); every case ends before vSphere is asked anything.


def scheduled(cinder, tmp_path, *, only_when_due=True):
    ctx = SimpleNamespace(openstack=cinder, migration_id="vm-1")
    return sync.run_sync(ctx, settings.SyncSettings(state_dir=str(tmp_path), only_when_due=only_when_due))


def test_a_scheduled_sync_skips_a_migration_in_cutover_and_an_operators_sync_refuses_it(tmp_path):
    cinder = a_migration()
    cinder.metadata["vol-a"]["xms_phase"] = "cutover"
    outcome = scheduled(cinder, tmp_path)
    assert (outcome.changed, outcome.kind, outcome.reason) == (False, "skipped", "in cutover")
    assert outcome.state.phase is Phase.CUTOVER
    with pytest.raises(PhaseError, match="syncs end at cutover"):
        scheduled(cinder, tmp_path, only_when_due=False)


def test_a_scheduled_sync_skips_a_migration_another_host_holds(tmp_path):
    cinder = a_migration(owner="conv-2:4242:0123456789ab", heartbeat=utcnow())
    outcome = scheduled(cinder, tmp_path)
    assert outcome.kind == "skipped" and outcome.reason.startswith("busy: migration vm-1 is held by conv-2:4242")
    assert outcome.state.owner == "conv-2:4242:0123456789ab"  # read, never written
    with pytest.raises(MigrationBusyError):
        scheduled(cinder, tmp_path, only_when_due=False)


def test_a_scheduled_sync_skips_a_migration_a_seed_on_this_host_holds(tmp_path):
    cinder = a_migration()
    with lock.host_lock(str(tmp_path), "vm-1"):  # as the seed's process holds it, for hours
        outcome = scheduled(cinder, tmp_path)
        with pytest.raises(MigrationBusyError):
            scheduled(cinder, tmp_path, only_when_due=False)
    assert outcome.kind == "skipped" and "is running on this host" in outcome.reason


def test_a_scheduled_sync_skips_a_vm_whose_migration_has_not_started(tmp_path):
    outcome = scheduled(FakeCinder({}), tmp_path)
    assert (outcome.kind, outcome.state) == ("skipped", None)
    assert outcome.reason == "not started (the seed playbook starts it)"
    with pytest.raises(MigrationNotFoundError):
        scheduled(FakeCinder({}), tmp_path, only_when_due=False)
