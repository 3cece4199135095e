"""The cutover reads the source's power state; the converted-then-powered-on branch, with a named mock of vSphere.

(The lab reaches the other branches for real: tests/functional/migration/test_cutover.py.)"""

import pytest

from ansible_collections.xms.warm_migration.plugins.module_utils.migration import cutover, rehearsal
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.errors import PhaseError, PreflightError
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.record import (
    DiskState,
    MigrationState,
    Phase,
)


def test_a_source_powered_on_after_conversion_is_refused_untouched(monkeypatch):
    calls = []
    # Mock of the vSphere power calls: the VM runs, and nothing may shut it down or write the record.
    monkeypatch.setattr(cutover.vs_power, "power_state", lambda _client, _vm: "poweredOn")
    monkeypatch.setattr(cutover.vs_power, "shutdown_guest", lambda *a, **k: calls.append("shutdown"))
    monkeypatch.setattr(cutover, "_done", lambda *a: calls.append("record"))
    state = MigrationState(migration_id="vm-9", vm_name="web", phase=Phase.CUTOVER, cutover_step="converted",
                           converted=True)  # fmt: skip
    outcome = cutover.CutoverOutcome(changed=True, steps_done=[], state=state)
    with pytest.raises(PhaseError) as err:
        cutover._source_stays_off(None, None, None, state, None, outcome)
    assert "rolled_back" in str(err.value) and calls == []


def test_a_source_already_off_is_recorded_as_shut_down_without_a_shutdown(monkeypatch):
    done = []
    monkeypatch.setattr(cutover.vs_power, "power_state", lambda _client, _vm: "poweredOff")  # mock: the VM is off
    monkeypatch.setattr(cutover.vs_power, "shutdown_guest", lambda *a, **k: done.append("shutdown_guest"))
    monkeypatch.setattr(cutover, "_done", lambda _os, _state, step, _outcome: done.append(step))
    state = MigrationState(migration_id="vm-9", vm_name="web", phase=Phase.CUTOVER)
    outcome = cutover.CutoverOutcome(changed=True, steps_done=[], state=state)
    cutover._source_stays_off(None, None, None, state, None, outcome)
    assert outcome.shutdown == "already_off" and done == ["shutdown"]


@pytest.mark.parametrize(
    ("field", "value"),
    [("shutdown_timeout", 0), ("shutdown_timeout", -5), ("instance_timeout", 0), ("downtime_budget", 0)],
)
def test_timeouts_that_would_fail_after_the_shutdown_are_refused_before_anything(field, value):
    settings = cutover.CutoverSettings(sync=None)
    setattr(settings, field, value)
    with pytest.raises(PreflightError) as err:
        cutover.run_cutover(None, None, None, "vm-9", None, settings)  # nothing is read: no adapter is needed
    assert err.value.parameter == field and "Nothing was changed" in str(err.value)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"phase": Phase.SYNCING}, "stopped part-way"),
        ({"pending": True}, "disks 2000 pending"),
        ({"needs_full_resync": True}, "changed outside a sync"),
    ],
)
def test_a_torn_replica_is_refused_for_a_test_migration(change, words):
    state = MigrationState(migration_id="vm-9", vm_name="web", phase=change.get("phase", Phase.READY),
                           needs_full_resync=change.get("needs_full_resync", False))  # fmt: skip
    disk = DiskState(disk_key=2000, volume_id="vol-a", index=0, capacity=1 << 30, change_id="52 1/8")
    disk.pending_change_id = "52 1/9" if change.get("pending") else ""
    state.disks = [disk]
    with pytest.raises(PhaseError) as err:
        rehearsal._consistent_replica(state)
    assert words in str(err.value) and "block_sync" in str(err.value)
    rehearsal._consistent_replica(MigrationState(migration_id="vm-9", vm_name="web", phase=Phase.READY,
                                                 disks=[DiskState(2000, "vol-a", 0, 1 << 30, "52 1/8")]))  # fmt: skip
