"""The migration record: encoding round trip, merging copies after a crash, metrics."""

from datetime import datetime, timedelta, timezone

import pytest

from ansible_collections.xms.warm_migration.plugins.module_utils.migration import lock
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.projection import (
    HISTORY,
    SyncSample,
    format_history,
    parse_history,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.record import (
    CUTOVER_MARKS,
    TEST_STEPS,
    DiskState,
    MigrationState,
    MigrationTestRun,
    Phase,
)

T0 = datetime(2026, 11, 22, 12, 0, 0, tzinfo=timezone.utc)


def state_with_two_disks() -> MigrationState:
    state = MigrationState(migration_id="vm-1", vm_name="web01", cadence="hourly")
    state.disks = [
        DiskState(disk_key=2000, volume_id="vol-a", index=0, capacity=1 << 30, label="Hard disk 1"),
        DiskState(disk_key=2001, volume_id="vol-b", index=1, capacity=1 << 29, label="Hard disk 2"),
    ]
    return state


def records(state: MigrationState):
    return [(d.volume_id, {**state.common_fields(), **state.disk_fields(d)}) for d in state.disks]


def test_round_trip_keeps_every_field():
    state = state_with_two_disks()
    state.phase, state.synced_at, state.sync_count, state.bytes_full, state.bytes_incr = Phase.READY, T0, 3, 100, 20
    state.rate, state.paused, state.converted, state.needs_full_resync = 12.5, True, True, True
    state.disks[0].change_id, state.disks[1].pending_change_id = "52 aa/7", "52 aa/8"
    state.disks[1].copied = {1764550000: 4096, 1764550600: 0}
    back = MigrationState.from_volumes(list(reversed(records(state))))
    assert back.metrics(T0) == state.metrics(T0)
    assert [d.volume_id for d in back.disks] == ["vol-a", "vol-b"]  # disk order, not volume order
    assert back.disks[1].pending_change_id == "52 aa/8" and back.disks[1].copied == state.disks[1].copied
    assert back.needs_full_resync and back.converted and back.paused


def test_every_value_is_a_short_string():
    state = state_with_two_disks()
    state.last_error = "x" * 1000
    for _volume_id, rec in records(state):
        assert all(isinstance(v, str) and len(v) <= 255 for v in rec.values())


def test_every_value_fits_cinder_whatever_the_figures(monkeypatch):
    """Six samples of a 60 TB seed and of day-long syncs, the largest counters, every cutover mark, a test,
    the longest hostname: each value still fits 255 characters; the history keeps its newest samples."""
    state = state_with_two_disks()
    huge, day = 60 * 10**12, 86_399.999
    state.history = [SyncSample(T0 + timedelta(days=i), "full_resync", huge, day, day) for i in range(HISTORY)]
    for disk in state.disks:
        disk.copied = {int((T0 + timedelta(days=i)).timestamp()): 10**18 for i in range(HISTORY)}
    state.bytes_full = state.bytes_incr = state.sync_count = state.progress_done = state.progress_total = 10**18
    state.rate, state.revision, state.operator_revision = 1e15, 10**18, 10**18
    state.cutover_marks = {mark: T0 for mark in CUTOVER_MARKS}
    state.estimates = {"shutdown_s": 1e9, "conversion_s": 1e9, "instance_s": 1e9}
    timings = dict.fromkeys(TEST_STEPS, 10**9)
    state.test = MigrationTestRun(at=T0, result="passed", instance_id="9" * 36, timings=timings)
    monkeypatch.setattr(lock.socket, "gethostname", lambda: "h" * 253)  # DNS's longest name
    state.owner, state.heartbeat, state.last_error = lock.owner_id(), T0, "x" * 1000
    nics = {f"00:50:56:01:00:{n:02x}": [f"10.10.{n}.{h}/24" for h in range(200, 204)] for n in range(10)}
    state.guest_addresses = nics  # ten NICs with four addresses each: the first NICs whole, the others left out
    state.guest_gateway, state.guest_dns = "10.10.0.1", [f"10.53.0.{n}" for n in range(100)]
    assert len(format_history(state.history[:1])) < 255 < len(";".join([format_history(state.history[:1])] * 6))
    for _volume_id, rec in records(state):
        assert {k: len(v) for k, v in rec.items() if len(v) > 255} == {}
    kept = parse_history(state.common_fields()["history"])
    assert kept and kept == state.history[-len(kept) :]  # the newest samples, the oldest left out
    back = MigrationState.from_volumes(records(state)).guest_addresses
    assert 0 < len(back) < len(nics) and back == {mac: nics[mac] for mac in back}
    dns = MigrationState.from_volumes(records(state)).guest_dns
    assert 0 < len(dns) < 100 and dns == state.guest_dns[: len(dns)]  # whole servers, the first ones


def test_a_record_with_nan_inf_or_an_epoch_no_date_holds_is_malformed_and_never_breaks_its_readers():
    state = state_with_two_disks()
    for field, bad in (("rate", "nan"), ("rate", "inf"), ("rate", "1e400")):
        with pytest.raises(ValueError):
            MigrationState.from_volumes([(vid, {**rec, field: bad}) for vid, rec in records(state)])
    state.synced_at = T0
    odd = {"estimates": "conversion_s=nan,instance_s=inf,shutdown_s=12", "history": "99999999999999999:i:1:1:1"}
    back = MigrationState.from_volumes([(vid, {**rec, **odd}) for vid, rec in records(state)])
    assert back.estimates == {"shutdown_s": 12.0} and back.history == []
    assert back.metrics(T0)["projected_downtime_seconds"] is None


def test_newest_copy_of_the_common_fields_wins():
    """A crash between two volume updates leaves copies of different age: the newer revision wins."""
    state = state_with_two_disks()
    old = records(state)
    state.revision, state.phase, state.sync_count = state.revision + 1, Phase.READY, 1
    new = records(state)
    mixed = [new[0], old[1]]
    assert MigrationState.from_volumes(mixed).phase == "ready"
    assert MigrationState.from_volumes([old[0], new[1]]).sync_count == 1


def test_seeded_only_when_every_disk_has_a_change_id():
    state = state_with_two_disks()
    state.disks[0].change_id = "52 aa/1"
    assert not state.seeded
    state.disks[1].change_id = "52 aa/1"
    assert state.seeded


def test_lag_and_due():
    state = state_with_two_disks()
    assert state.lag_seconds(T0) is None and state.sync_due(T0)
    state.synced_at = T0
    assert state.lag_seconds(T0 + timedelta(minutes=20)) == 1200
    assert not state.sync_due(T0 + timedelta(minutes=59))
    assert state.sync_due(T0 + timedelta(minutes=60))
    state.cadence = "manual"
    assert not state.sync_due(T0 + timedelta(days=30))


def test_busy_only_while_heartbeat_is_fresh():
    state = state_with_two_disks()
    state.owner, state.heartbeat = "conv01:123", T0
    assert state.is_busy(T0 + timedelta(minutes=5))
    assert not state.is_busy(T0 + timedelta(minutes=11))


def test_the_operators_fields_and_the_runs_fields_have_their_own_newest_copy():
    """A pause written while a sync runs: the sync's later writes carry no pause, and each group reads its newest."""
    state = state_with_two_disks()
    volumes = {d.volume_id: {**state.common_fields(), **state.disk_fields(d)} for d in state.disks}
    state.paused, state.operator_revision = True, 1  # the operator: its fields only, on every volume
    for record in volumes.values():
        record.update(state.operator_fields())
    state.paused, state.phase, state.sync_count, state.revision = False, Phase.READY, 1, 5  # the sync's stale copy
    volumes["vol-a"].update(state.run_fields())  # the sync got to one volume before it stopped
    back = MigrationState.from_volumes(list(volumes.items()))
    assert (back.paused, back.phase, back.sync_count) == (True, Phase.READY, 1)
    assert "paused" not in state.run_fields() and "cadence" not in state.run_fields()
    assert set(state.heartbeat_fields()) == {"owner", "heartbeat", "progress", "rate"}


def test_the_cutover_clock_is_kept_and_gives_downtime_and_where_it_went():
    state = state_with_two_disks()
    state.phase = Phase.CUTOVER
    marks = {"started": 0, "shutdown": 25, "final_sync": 40, "converted": 280, "boot_checked": 318, "instance": 337}
    state.cutover_marks = {name: T0 + timedelta(seconds=s) for name, s in marks.items()}
    back = MigrationState.from_volumes(records(state))
    assert back.cutover_marks == state.cutover_marks
    state.estimates = {"shutdown_s": 21.0, "conversion_s": 240.0}
    assert MigrationState.from_volumes(records(state)).estimates == state.estimates
    assert back.downtime_s() == 337 - 25  # from the guest going down to the instance being ACTIVE
    assert back.cutover_timings() == {"shutdown": 25, "final_sync": 15, "converted": 240, "boot_checked": 38,
                                      "instance": 19}  # fmt: skip
    assert all(len(v) <= 255 for _vid, rec in records(state) for v in rec.values())


def test_downtime_counts_while_the_guest_is_down_and_is_null_before():
    state = state_with_two_disks()
    assert state.downtime_s(T0) is None and state.metrics(T0)["cutover_timings"] is None
    state.cutover_marks = {"started": T0, "shutdown": T0 + timedelta(seconds=30)}
    assert state.downtime_s(T0 + timedelta(seconds=100)) == 70


def test_a_test_migration_is_kept_by_its_own_writer_and_a_syncs_stale_copy_never_undoes_it():
    """migration_test writes only ``test`` (every volume); a sync running meanwhile writes its fields, never it."""
    state = state_with_two_disks()
    volumes = {d.volume_id: {**state.common_fields(), **state.disk_fields(d)} for d in state.disks}
    run = MigrationTestRun(at=T0, result="passed", instance_id="srv-1", timings={"cloned": 9, "converted": 151})
    state.test = run
    for record in volumes.values():
        record.update(state.test_fields())
    state.test, state.sync_count, state.revision = None, 4, 9  # a sync loaded before the test was recorded
    for record in volumes.values():
        record.update(state.run_fields())
    back = MigrationState.from_volumes(list(volumes.items()))
    assert back.test == run and back.sync_count == 4
    assert back.metrics(T0)["test"] == {"at": "2026-11-22T12:00:00Z", "result": "passed", "instance_id": "srv-1",
                                        "timings": {"cloned": 9, "converted": 151}}  # fmt: skip
    assert "test" not in state.run_fields()
    volumes["vol-b"]["test"] = "at=yesterday,result=passed"  # a hand-edited copy: the other one still counts
    assert MigrationState.from_volumes(list(volumes.items())).test == run
