"""Holding a migration (ownership.hold): claim, read-back, release on every exit, and staleness by one clock.

The record's store is FakeCinder, an in-memory stand-in of Cinder's volume metadata (list and merge):
the two-hosts-at-once interleaving and a failing last write are branches the lab's Cinder cannot be
made to take on cue. The lab shows the protocol end to end (tests/functional/migration/test_record_owners.py).
"""

import socket
from types import SimpleNamespace

import pytest

from ansible_collections.xms.warm_migration.plugins.module_utils.migration import lock, ownership, record, store
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.errors import (
    MigrationBusyError,
    PhaseError,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.record import DiskState, MigrationState


class FakeCinder:
    """Volumes with metadata: ``volumes(details=True)`` lists them, ``set_volume_metadata`` merges into one."""

    def __init__(self, metadata):
        self.metadata = metadata  # volume id -> {key: value}
        self.on_write = None  # called after each write (another host's move, or a fault)
        self.block_storage = self
        self.conn = self

    def volumes(self, details=True):
        common = {"size": 1, "status": "available", "is_bootable": False, "availability_zone": "az", "volume_type": ""}
        return [SimpleNamespace(id=vid, metadata=dict(md), name=vid, **common) for vid, md in self.metadata.items()]

    def set_volume_metadata(self, volume_id, **fields):
        self.metadata[volume_id].update(fields)
        if self.on_write is not None:
            self.on_write(volume_id, fields)


def a_migration(**fields) -> FakeCinder:
    state = MigrationState(migration_id="vm-1", vm_name="web", phase=record.Phase.READY, **fields)
    disk = DiskState(disk_key=2000, volume_id="vol-a", index=0, capacity=1 << 30, change_id="52 1/8")
    md = {**state.common_fields(), **MigrationState.disk_fields(disk)}
    return FakeCinder({"vol-a": {f"xms_{k}": v for k, v in md.items()}})


def test_a_hold_claims_reads_back_and_releases_with_the_error_recorded(tmp_path):
    cinder = a_migration()
    with pytest.raises(RuntimeError), ownership.hold(cinder, "vm-1", str(tmp_path)) as held:
        assert store.load(cinder, "vm-1").owner == lock.owner_id() == held.state.owner
        raise RuntimeError("the copy failed")
    after = store.load(cinder, "vm-1")
    assert (after.owner, after.heartbeat, after.last_error) == ("", None, "the copy failed")


def test_the_check_sees_the_record_as_loaded_under_the_lock_and_refuses_before_any_write(tmp_path):
    cinder = a_migration()
    first_read = store.load(cinder, "vm-1")
    cinder.metadata["vol-a"]["xms_phase"] = "cutover"  # moved after the first read, before the hold
    writes = []
    cinder.on_write = lambda vid, fields: writes.append(fields)

    def no_cutover(state):
        if state.phase is record.Phase.CUTOVER:
            raise PhaseError("in cutover")

    assert first_read.phase is record.Phase.READY
    with pytest.raises(PhaseError), ownership.hold(cinder, "vm-1", str(tmp_path), check=no_cutover):
        pass
    assert writes == []


def test_of_two_hosts_claiming_at_once_the_one_the_read_back_does_not_name_stops_untouched(tmp_path):
    cinder = a_migration()
    rival = "conv02:77:0123456789ab"

    def rival_claims_the_same_revision(vid, fields):
        if fields.get("xms_owner") == lock.owner_id():  # our claim landed; the rival's lands right after it
            cinder.on_write = None
            cinder.metadata[vid].update({**fields, "xms_owner": rival})

    cinder.on_write = rival_claims_the_same_revision
    body = []
    with pytest.raises(MigrationBusyError) as err, ownership.hold(cinder, "vm-1", str(tmp_path)):
        body.append("ran")
    assert body == [] and rival in str(err.value) and "Nothing was changed" in str(err.value)
    assert store.load(cinder, "vm-1").owner == rival  # the winner's claim stands


def test_a_failed_release_never_hides_the_error_that_ended_the_work(tmp_path):
    cinder = a_migration()

    def cinder_fails_once_the_work_failed(_vid, fields):
        if fields.get("xms_last_error"):
            raise ConnectionError("503 Service Unavailable")  # mock: the release's write fails

    with pytest.raises(RuntimeError, match="the real error"), ownership.hold(cinder, "vm-1", str(tmp_path)):
        cinder.on_write = cinder_fails_once_the_work_failed
        raise RuntimeError("the real error")


def test_another_hosts_owner_is_taken_over_only_after_this_host_saw_its_beat_unchanged_long_enough(
    tmp_path, monkeypatch
):
    now = [1000.0]
    monkeypatch.setattr(ownership.time, "time", lambda: now[0])  # this host's clock; the owner's is never read
    seen = ownership.Observations(str(tmp_path))
    state = MigrationState(migration_id="vm-1", vm_name="web", owner="conv02:77:0123456789ab")
    state.heartbeat = record.parse_time("1999-01-01T00:00:00Z")  # the owner's clock is far behind: irrelevant
    with pytest.raises(MigrationBusyError):
        ownership.ensure_free(state, seen)  # the first look is never stale
    now[0] += record.HEARTBEAT_STALE_S - 1
    with pytest.raises(MigrationBusyError):
        ownership.ensure_free(state, seen)
    state.heartbeat = record.parse_time("1999-01-01T00:00:10Z")  # it beat: alive, the wait starts over
    now[0] += 5
    with pytest.raises(MigrationBusyError):
        ownership.ensure_free(state, seen)
    now[0] += record.HEARTBEAT_STALE_S
    ownership.ensure_free(state, seen)  # unchanged for the whole limit, as this host saw it


def test_this_host_is_this_boot_of_this_hostname(monkeypatch):
    monkeypatch.setattr(lock, "boot_id", lambda: "aaaaaaaaaaaa")
    here = socket.gethostname()
    assert lock.on_this_host(f"{here}:1:aaaaaaaaaaaa")
    assert not lock.on_this_host(f"{here}:1:bbbbbbbbbbbb")  # a clone of this host (same hostname), or a reboot
    assert not lock.on_this_host("conv02:1:aaaaaaaaaaaa")  # a host sharing this kernel (a namespace)
    assert lock.on_this_host(f"{here}:1") and not lock.on_this_host("conv02:1")  # written before boot ids


def test_without_a_state_directory_any_owner_of_another_host_holds_it():
    state = MigrationState(migration_id="vm-1", vm_name="web", owner="conv02:77:0123456789ab")
    with pytest.raises(MigrationBusyError) as err:
        ownership.ensure_free(state, None)
    assert "conv02" in str(err.value)


def test_one_migration_with_nan_inf_or_an_undatable_epoch_is_reported_malformed_and_the_others_listed():
    cinder = a_migration()
    broken = dict(cinder.metadata["vol-a"])
    broken.update({"xms_migration_id": "vm-2", "xms_volume_id": "vol-b", "xms_rate": "nan"})
    cinder.metadata["vol-b"] = broken
    states, malformed = store.list_all(cinder)
    assert list(states) == ["vm-1"] and [m.migration_id for m in malformed] == ["vm-2"]
    assert "does not parse" in malformed[0].reason and "nan" in malformed[0].reason
