"""The cutover reads the source's power state; the converted-then-powered-on branch, with a named mock of vSphere.

(The lab reaches the other branches for real: tests/functional/migration/test_cutover.py.)"""

from types import SimpleNamespace

import pytest

from ansible_collections.xms.warm_migration.plugins.module_utils.conversion.virt_v2v import ConversionOptions
from ansible_collections.xms.warm_migration.plugins.module_utils.migration import cutover, rehearsal
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.context import MigrationContext
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.errors import PhaseError, PreflightError
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.initialize import (
    NetworkMapping,
    TargetSettings,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.record import (
    DiskState,
    MigrationState,
    Phase,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere.inventory import Nic


def a_context():
    """The context of VM 'web' (migration vm-9) with nothing connected: the tests mock the calls they reach."""
    return MigrationContext(vsphere=None, vm=None, inventory=SimpleNamespace(instance_uuid="9", name="web"))


def a_run(state, outcome=None):
    """A cutover run of a_context() with the record as ``state``."""
    held = SimpleNamespace(state=state)
    return cutover._Run(a_context(), held, [], None, None, outcome)


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
        cutover._source_stays_off(a_run(state, outcome))
    assert "rolled_back" in str(err.value) and calls == []


def test_a_source_already_off_is_recorded_as_shut_down_without_a_shutdown(monkeypatch):
    done = []
    monkeypatch.setattr(cutover.vs_power, "power_state", lambda _client, _vm: "poweredOff")  # mock: the VM is off
    monkeypatch.setattr(cutover.vs_power, "shutdown_guest", lambda *a, **k: done.append("shutdown_guest"))
    monkeypatch.setattr(cutover, "_done", lambda _os, _state, step, _outcome: done.append(step))
    state = MigrationState(migration_id="vm-9", vm_name="web", phase=Phase.CUTOVER)
    outcome = cutover.CutoverOutcome(changed=True, steps_done=[], state=state)
    cutover._source_stays_off(a_run(state, outcome))
    assert outcome.shutdown == "already_off" and done == ["shutdown"]


@pytest.mark.parametrize(
    ("field", "value"),
    [("shutdown_timeout", 0), ("shutdown_timeout", -5), ("instance_timeout", 0), ("downtime_budget", 0)],
)
def test_timeouts_that_would_fail_after_the_shutdown_are_refused_before_anything(field, value):
    settings = cutover.CutoverSettings(sync=None)
    setattr(settings, field, value)
    with pytest.raises(PreflightError) as err:
        cutover.check_settings(settings)
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


def test_a_rollback_of_a_completed_migration_says_why_not(monkeypatch):
    done = MigrationState(migration_id="vm-9", vm_name="web", phase=Phase.COMPLETED, instance_id="srv-1")
    monkeypatch.setattr(cutover.store, "load", lambda _client, _mid: done)  # mock: the record as Cinder holds it
    with pytest.raises(PhaseError) as err:
        cutover.rollback(a_context(), cutover.CutoverSettings(sync=None))
    assert err.value.parameter == "state" and "srv-1" in str(err.value) and "warm_migration_init" in str(err.value)


def table_run(monkeypatch, state, power_on_before=()):
    """The step table with each step's body replaced by a named mock that records itself; the guard reads a
    mock power state that is 'poweredOn' once before each step named in ``power_on_before``."""
    ran, pending = [], list(power_on_before)

    def fake_body(name):
        def body(run):
            ran.append(name)
            run.state.cutover_step = name

        return body

    def guard(run):
        """Mock of _source_stays_off: the guest was powered on meanwhile when the next step is in the list."""
        st = run.state
        nxt = cutover._next_step(st).name
        if nxt in pending:
            pending.remove(nxt)
            ran.append(f"shut down again before {nxt}")
            st.cutover_step = "shutdown"

    table = tuple(cutover.Step(s.name, s.source_off, fake_body(s.name)) for s in cutover.STEP_TABLE)
    monkeypatch.setattr(cutover, "STEP_TABLE", table)
    monkeypatch.setattr(cutover, "_source_stays_off", guard)
    cutover._run_steps(a_run(state))
    return ran


def test_the_step_table_runs_every_step_after_the_recorded_one_in_order(monkeypatch):
    fresh = MigrationState(migration_id="vm-9", vm_name="web", phase=Phase.CUTOVER)
    assert table_run(monkeypatch, fresh) == ["shutdown", "final_sync", "converted", "instance", "validated",
                                             "completed"]  # fmt: skip
    resumed = MigrationState(migration_id="vm-9", vm_name="web", phase=Phase.CUTOVER, cutover_step="converted")
    assert table_run(monkeypatch, resumed) == ["instance", "validated", "completed"]


def test_a_source_powered_on_before_the_instance_sends_the_table_back_to_the_final_delta(monkeypatch):
    state = MigrationState(migration_id="vm-9", vm_name="web", phase=Phase.CUTOVER, cutover_step="final_sync")
    ran = table_run(monkeypatch, state, power_on_before=["instance"])
    assert ran == ["converted", "shut down again before instance", "final_sync", "converted", "instance",
                   "validated", "completed"]  # fmt: skip


def test_an_address_vmware_tools_sees_that_the_port_will_not_carry_is_a_warning_naming_fixed_ips():
    mapping = NetworkMapping("App", "app-net")
    kept = Nic(4000, "00:50:56:00:00:01", "App", "vmxnet3", 192, ("10.10.1.50/24",))
    other = Nic(4001, "00:50:56:00:00:02", "App", "vmxnet3", 224, ("10.10.2.7/24",))
    unknown = Nic(4002, "00:50:56:00:00:03", "App", "vmxnet3", 256, ("10.10.3.9/24",))
    silent = Nic(4003, "00:50:56:00:00:04", "App", "vmxnet3", 161)
    target = TargetSettings(
        network_map=[mapping], fixed_ips={"00:50:56:00:00:01": "10.10.1.50", "00:50:56:00:00:02": "10.10.2.8"}
    )
    warnings = cutover.address_warnings([(n, mapping) for n in (kept, other, unknown, silent)], target)
    assert len(warnings) == 2
    assert "10.10.2.7/24 on NIC 00:50:56:00:00:02, but its port gets 10.10.2.8 (fixed_ips)" in warnings[0]
    assert "its port gets an address Neutron chooses" in warnings[1]
    assert "give fixed_ips {00:50:56:00:00:03: 10.10.3.9}" in warnings[1]


@pytest.mark.parametrize(
    "guest_id, vtpm, tools_running, skip, said",
    [
        ("windows2019srvNext_64Guest", True, True, False, ["virtual TPM"]),
        ("windows2019srvNext_64Guest", False, False, False, ["VMware Tools is not running"]),
        ("windows2019srvNext_64Guest", False, False, True, []),  # not converted: nothing set again
        ("windows2019srvNext_64Guest", False, True, False, []),
        ("debian12_64Guest", True, False, False, []),  # a Linux guest's configuration keeps its addresses
    ],
)
def test_what_a_windows_guest_loses_is_said_before_the_shutdown(guest_id, vtpm, tools_running, skip, said):
    inv = SimpleNamespace(guest_id=guest_id, vtpm=vtpm, tools_running=tools_running, nics=[])
    warnings = cutover.windows_warnings(inv, ConversionOptions(skip=skip))
    assert [next(w for w in warnings if s in w) for s in said] == warnings
