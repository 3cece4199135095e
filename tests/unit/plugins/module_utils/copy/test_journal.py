"""The resume journal: keyed to its plan, atomic, appended to, and honest about what is left."""

import os

from ansible_collections.xms.warm_migration.plugins.module_utils.copy.extents import Extent
from ansible_collections.xms.warm_migration.plugins.module_utils.copy.journal import (
    Journal,
    read_journal,
    remaining_extents,
)

PLAN = [Extent(0, 100), Extent(200, 50)]
RECORD_OF_ONE = 4 + 1 + 16 + 4  # count, flags, one extent, CRC-32


def journaled(tmp_path, *checkpoints):
    """A journal of PLAN with one checkpoint per argument (each a list of extents); its path."""
    path = str(tmp_path / "j")
    journal = Journal(path, PLAN, 1000)
    for flushed in checkpoints:
        journal.checkpoint(flushed)
    return path


def test_progress_round_trips_for_the_same_plan(tmp_path):
    path = str(tmp_path / "j")
    Journal(path, PLAN, 1000).checkpoint([Extent(0, 60)])
    again = Journal(path, PLAN, 1000)
    again.load()
    assert again.done == [Extent(0, 60)] and not again.complete
    assert remaining_extents(path) == [Extent(60, 40), Extent(200, 50)]


def test_checkpoints_append_what_was_flushed_since_the_last_one(tmp_path):
    path = str(tmp_path / "j")
    journal = Journal(path, PLAN, 1000)
    journal.checkpoint([Extent(0, 60)])
    after_first = os.path.getsize(path)
    journal.checkpoint([Extent(60, 40)])
    assert os.path.getsize(path) - after_first == RECORD_OF_ONE  # the plan is not rewritten
    assert remaining_extents(path) == [Extent(200, 50)]
    journal.checkpoint([Extent(200, 50)], complete=True)
    assert remaining_extents(path) == []


def test_a_resumed_run_appends_to_what_the_first_one_recorded(tmp_path):
    path = str(tmp_path / "j")
    Journal(path, PLAN, 1000).checkpoint([Extent(0, 100)])
    resumed = Journal(path, PLAN, 1000)
    resumed.load()
    resumed.checkpoint([Extent(200, 20)])
    assert read_journal(path).done == [Extent(0, 100), Extent(200, 20)]


def test_a_record_torn_by_a_crash_is_not_believed_and_is_cut_before_appending(tmp_path):
    path = journaled(tmp_path, [Extent(0, 10)], [Extent(10, 90)])
    whole = os.path.getsize(path) - RECORD_OF_ONE
    with open(path, "r+b") as handle:  # the second record lost its last bytes: the crash came mid-append
        handle.truncate(os.path.getsize(path) - 3)
    assert read_journal(path).done == [Extent(0, 10)]
    resumed = Journal(path, PLAN, 1000)
    resumed.load()
    assert os.path.getsize(path) == whole
    resumed.checkpoint([Extent(200, 50)])
    assert read_journal(path).done == [Extent(0, 10), Extent(200, 50)]


def test_a_record_with_a_bad_checksum_ends_what_is_believed(tmp_path):
    path = journaled(tmp_path, [Extent(0, 10)], [Extent(10, 10)], [Extent(20, 10)])
    with open(path, "r+b") as handle:  # flip a byte inside the second record's extent
        handle.seek(os.path.getsize(path) - 2 * RECORD_OF_ONE + 6)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0xFF]))
    assert read_journal(path).done == [Extent(0, 10)]


def test_a_journal_of_another_plan_is_ignored_and_replaced(tmp_path):
    path = str(tmp_path / "j")
    Journal(path, PLAN, 1000).checkpoint([Extent(0, 100)])
    other = Journal(path, [Extent(0, 100)], 1000)
    other.load()
    assert other.done == []
    resized = Journal(path, PLAN, 2000)
    resized.load()
    assert resized.done == []
    resized.checkpoint([Extent(200, 50)])
    assert read_journal(path).done == [Extent(200, 50)] and read_journal(path).size == 2000


def test_complete_means_nothing_left(tmp_path):
    path = str(tmp_path / "j")
    Journal(path, PLAN, 1000).checkpoint(PLAN, complete=True)
    assert remaining_extents(path) == []


def test_missing_or_garbage_journal_is_unknown(tmp_path):
    assert remaining_extents(str(tmp_path / "none")) is None
    (tmp_path / "bad").write_text("{not a journal")
    assert remaining_extents(str(tmp_path / "bad")) is None
    good = str(tmp_path / "good")
    Journal(good, PLAN, 1000).checkpoint([])
    with open(good, "r+b") as handle:  # a header that does not check is no journal at all
        handle.truncate(os.path.getsize(good) - 12)
    assert remaining_extents(good) is None


def test_written_atomically_and_private(tmp_path):
    path = str(tmp_path / "sub" / "j")
    Journal(path, PLAN, 1000).checkpoint([Extent(0, 10)])
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert os.listdir(tmp_path / "sub") == ["j"]  # no temporary file left behind
    assert read_journal(path).plan == PLAN
