"""The owner's heartbeat: a timer that reports while its owner runs, best effort, and quiet once it let go.

store.save_heartbeat is replaced by named fakes (a record that takes the writes, one that fails)."""

import time

from ansible_collections.xms.warm_migration.plugins.module_utils.copy.copier import Progress
from ansible_collections.xms.warm_migration.plugins.module_utils.migration import heartbeat, store
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.record import MigrationState


def test_it_beats_while_the_owner_runs_and_stops_when_it_lets_go(monkeypatch):
    writes = []
    monkeypatch.setattr(store, "save_heartbeat", lambda _client, state: writes.append(dict(state.heartbeat_fields())))
    state = MigrationState(migration_id="vm-1", vm_name="web", owner="host:1")
    with heartbeat.Heartbeat(None, state, every=0.05) as beat:
        beat.expect(100)
        beat.disk(2000)(Progress(done=30, total=60, rate=10.0, eta_s=3.0))  # the engines' callbacks: numbers only
        beat.disk(2001)(Progress(done=10, total=40, rate=5.0, eta_s=6.0))
        assert (state.progress_done, state.rate) == (40, 15.0)  # two disks copying at once add up
        time.sleep(0.3)
        state.owner = ""  # the owner's last write clears it
        seen = len(writes)
        time.sleep(0.2)
    assert seen >= 2 and writes[-1]["progress"] == "40/100" and writes[-1]["owner"] == "host:1"
    assert len(writes) == seen  # nothing after the owner let go


def test_a_finished_disk_counts_whole_and_no_longer_adds_to_the_rate():
    state = MigrationState(migration_id="vm-1", vm_name="web", owner="host:1")
    beat = heartbeat.Heartbeat(None, state)
    beat.expect(100)
    beat.disk(2000)(Progress(done=30, total=60, rate=10.0, eta_s=3.0))
    beat.disk(2001)(Progress(done=10, total=40, rate=5.0, eta_s=6.0))
    beat.disk_done(2000, 60)
    assert (state.progress_done, state.rate) == (70, 5.0)


def test_a_failing_write_is_counted_and_the_beats_go_on(monkeypatch):
    def failing_write(_client, _state):  # fake: Cinder answers 503
        raise RuntimeError("503 Service Unavailable")

    monkeypatch.setattr(store, "save_heartbeat", failing_write)
    state = MigrationState(migration_id="vm-1", vm_name="web", owner="host:1")
    with heartbeat.Heartbeat(None, state, every=0.05) as beat:
        time.sleep(0.3)
    assert beat.failures >= 2 and "503" in beat.warnings()[0]
