"""The host lock: a second holder is refused at once with a clear message; a dead holder does not block."""

import multiprocessing
import os

import pytest

from ansible_collections.xms.warm_migration.plugins.module_utils.migration.errors import (
    MigrationBusyError,
    StateDirError,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.lock import boot_id, host_lock, owner_id
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.ownership import ensure_free
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.record import MigrationState, utcnow


def _hold_then_die(state_dir, ready):
    with host_lock(state_dir, "vm-1"):
        ready.set()
        os._exit(0)  # dies holding the lock, like a killed sync


def test_second_holder_is_refused(tmp_path):
    with host_lock(str(tmp_path), "vm-1"), pytest.raises(MigrationBusyError) as err, host_lock(str(tmp_path), "vm-1"):
        pass
    assert "vm-1" in str(err.value) and "Wait for it to finish" in str(err.value)


def test_other_migrations_do_not_collide(tmp_path):
    with host_lock(str(tmp_path), "vm-1"), host_lock(str(tmp_path), "vm-2"):
        pass


def test_a_dead_holder_releases_the_lock(tmp_path):
    ready = multiprocessing.Event()
    proc = multiprocessing.Process(target=_hold_then_die, args=(str(tmp_path), ready))
    proc.start()
    proc.join(30)
    assert ready.is_set()
    with host_lock(str(tmp_path), "vm-1"):
        pass


def test_lock_file_is_private(tmp_path):
    with host_lock(str(tmp_path / "state"), "vm-1"):
        assert os.stat(tmp_path / "state").st_mode & 0o777 == 0o700
        assert os.stat(tmp_path / "state" / "vm-1.lock").st_mode & 0o777 == 0o600


def test_a_fresh_record_of_a_dead_sync_on_this_host_does_not_block_but_one_of_another_host_does():
    state = MigrationState(migration_id="vm-1", vm_name="web01")
    state.owner, state.heartbeat = owner_id().rsplit(":", 2)[0] + f":999999:{boot_id()}", utcnow()  # killed, here
    ensure_free(state, None)  # the flock decides on this host
    state.owner = "conv02.example.com:4242"
    with pytest.raises(MigrationBusyError) as err:
        ensure_free(state, None)
    assert "conv02.example.com" in str(err.value)


def test_an_unusable_state_dir_is_bad_input_named_as_such(tmp_path):
    """A state_dir the host cannot write (here: below a regular file, which stops even root) names the parameter."""
    (tmp_path / "file").write_text("")
    with pytest.raises(StateDirError) as err, host_lock(str(tmp_path / "file" / "state"), "vm-1"):
        pass
    assert err.value.parameter == "state_dir" and "Not a directory" in str(err.value)
