"""The cutover reads the source's power state; the converted-then-powered-on branch, with a named mock of vSphere.

(The lab reaches the other branches for real: tests/functional/migration/test_cutover.py.)"""

import pytest

from ansible_collections.xms.warm_migration.plugins.module_utils.migration import cutover
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.errors import PhaseError
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.record import MigrationState, Phase


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
