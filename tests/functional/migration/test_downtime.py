"""A downtime budget: the cutover syncs back to back while the source runs until the projection fits,
or stops before the shutdown when the guest writes faster than a sync copies (both labs).

A writer changes the source disk at a set rate through the lab's live export, as a running guest
does; the syncs copy at a set bandwidth. The conversion host's step times are given as measured
(``measured.json``), so the projection depends on the syncs alone.
"""

import time
from contextlib import contextmanager

import pytest

from ansible_collections.xms.warm_migration.plugins.module_utils.migration import cutover as cutover_module
from ansible_collections.xms.warm_migration.plugins.module_utils.migration import ownership, store
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.context import MigrationContext
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.cutover import run_cutover
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.errors import PhaseError
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.projection import HostTimes, epoch
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.record import Phase
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.sync import run_sync
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere.errors import PowerError

from .conftest import Writer, data_cutover, power_state, start


def prepared(vsphere, vm, openstack, target, settings):
    """Seeded at full speed, the host's step times known; returns (migration id, data disk key)."""
    migration_id = start(vsphere, vm, openstack, target).migration_id
    run_sync(MigrationContext.read(vsphere, vm, openstack), settings)
    HostTimes(settings.state_dir).save(shutdown_s=2, instance_s=15)
    return migration_id, str(store.load(openstack, migration_id).disks[0].disk_key)


def test_a_downtime_budget_is_met_by_syncing_back_to_back_before_the_shutdown(
    vsphere, vm_1, openstack, target, settings
):
    migration_id, key = prepared(vsphere, vm_1, openstack, target, settings)
    settings.bandwidth_limit = 4_000_000  # a sync copies 4 MB/s; the guest changes 1 MB/s
    cutover = data_cutover(settings, instance_timeout=300, downtime_budget=22)
    with Writer("lab-vm-1", key, 1_000_000):
        for _measure in range(2):  # the change rate, measured
            time.sleep(10)
            run_sync(MigrationContext.read(vsphere, vm_1, openstack), settings)
        time.sleep(60)  # a minute of changes: about 40 MB of the 64 MiB disk to copy at 4 MB/s
        state = store.load(openstack, migration_id)
        for sample in state.history:  # each disk recorded its own bytes of each sync: the projection's per disk
            assert sum(disk.copied[epoch(sample.snapshot_at)] for disk in state.disks) == sample.bytes
        before = state.projection(convert=False)
        assert before.downtime_s > 22  # about 26 s: 15 s of instance step, the rest the final sync
        outcome = run_cutover(MigrationContext.read(vsphere, vm_1, openstack), target, cutover)
    assert 1 <= outcome.convergence_syncs <= 5
    assert outcome.projection["downtime_s"] <= 22
    assert outcome.steps_done[-1] == "completed" and outcome.downtime_s is not None
    print(f"projected {before.downtime_s:.1f} s, then {outcome.projection['downtime_s']} s after"
          f" {outcome.convergence_syncs} syncs; measured {outcome.downtime_s} s")  # fmt: skip


def test_a_guest_writing_faster_than_a_sync_copies_is_refused_before_the_shutdown(
    vsphere, vm_1, openstack, target, settings
):
    migration_id, key = prepared(vsphere, vm_1, openstack, target, settings)
    settings.bandwidth_limit = 400_000  # a sync copies 0.4 MB/s; the guest changes 0.5 MB/s
    cutover = data_cutover(settings, downtime_budget=20)
    with Writer("lab-vm-1", key, 500_000):
        time.sleep(8)
        run_sync(MigrationContext.read(vsphere, vm_1, openstack), settings)
        with pytest.raises(PhaseError) as err:
            run_cutover(MigrationContext.read(vsphere, vm_1, openstack), target, cutover)
    assert err.value.parameter == "downtime_budget" and "nothing was shut down" in str(err.value)
    assert power_state(vsphere, vm_1) == "poweredOn"
    state = store.load(openstack, migration_id)
    assert (state.phase, state.cutover_step) == (Phase.READY, "")


def test_a_budgeted_cutover_rerun_after_a_failed_shutdown_projects_as_in_ready_and_finishes_held(
    vsphere, vm_1, openstack, target, settings, monkeypatch
):
    """The first run stops at the shutdown (phase cutover, no step done, the source still running); the
    rerun projects from the history as in ready, holds the migration throughout, and completes."""
    migration_id, key = prepared(vsphere, vm_1, openstack, target, settings)
    with Writer("lab-vm-1", key, 200_000):
        for _measure in range(2):  # the change rate, measured
            time.sleep(5)
            run_sync(MigrationContext.read(vsphere, vm_1, openstack), settings)
    cutover = data_cutover(settings, instance_timeout=300, downtime_budget=600)

    def tools_not_running(*_args, **_kwargs):
        """Mock of a guest whose VMware Tools do not answer (vcsim's guests always shut down)."""
        raise PowerError("the guest of VM 'lab-vm-1' did not answer the shutdown: VMware Tools are not running")

    monkeypatch.setattr(cutover_module.vs_power, "shutdown_guest", tools_not_running)
    with pytest.raises(PowerError):
        run_cutover(MigrationContext.read(vsphere, vm_1, openstack), target, cutover)
    state = store.load(openstack, migration_id)
    assert (state.phase, state.cutover_step, state.owner) == (Phase.CUTOVER, "", "")
    assert power_state(vsphere, vm_1) == "poweredOn" and state.projection(convert=False) is not None
    monkeypatch.undo()
    holders = []
    hold = ownership.hold

    @contextmanager
    def watched(*args, **kwargs):
        with hold(*args, **kwargs) as held:
            holders.append(store.load(openstack, migration_id).owner)
            yield held

    monkeypatch.setattr(cutover_module.ownership, "hold", watched)
    rerun = run_cutover(MigrationContext.read(vsphere, vm_1, openstack), target, cutover)
    assert rerun.projection is not None and rerun.projection["downtime_s"] <= 600
    assert rerun.steps_done[0] == "shutdown" and rerun.steps_done[-1] == "completed"
    assert len(holders) == 1 and holders[0]  # one hold, from the projection to the last step
