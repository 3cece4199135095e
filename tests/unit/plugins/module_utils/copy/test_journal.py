"""The resume journal: keyed to its plan, atomic, and honest about what is left."""

import json
import os

from ansible_collections.xms.warm_migration.plugins.module_utils.copy.extents import Extent
from ansible_collections.xms.warm_migration.plugins.module_utils.copy.journal import Journal, remaining_extents

PLAN = [Extent(0, 100), Extent(200, 50)]


def test_progress_round_trips_for_the_same_plan(tmp_path):
    path = str(tmp_path / "j")
    Journal(path, PLAN, 1000).checkpoint([Extent(0, 60)])
    again = Journal(path, PLAN, 1000)
    again.load()
    assert again.done == [Extent(0, 60)] and not again.complete
    assert remaining_extents(path) == [Extent(60, 40), Extent(200, 50)]


def test_a_journal_of_another_plan_is_ignored(tmp_path):
    path = str(tmp_path / "j")
    Journal(path, PLAN, 1000).checkpoint([Extent(0, 100)])
    other = Journal(path, [Extent(0, 100)], 1000)
    other.load()
    assert other.done == []
    resized = Journal(path, PLAN, 2000)
    resized.load()
    assert resized.done == []


def test_complete_means_nothing_left(tmp_path):
    path = str(tmp_path / "j")
    Journal(path, PLAN, 1000).checkpoint(PLAN, complete=True)
    assert remaining_extents(path) == []


def test_missing_or_garbage_journal_is_unknown(tmp_path):
    assert remaining_extents(str(tmp_path / "none")) is None
    (tmp_path / "bad").write_text("{not json")
    assert remaining_extents(str(tmp_path / "bad")) is None


def test_written_atomically_and_private(tmp_path):
    path = str(tmp_path / "sub" / "j")
    Journal(path, PLAN, 1000).checkpoint([Extent(0, 10)])
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert os.listdir(tmp_path / "sub") == ["j"]  # no temporary file left behind
    with open(path) as handle:
        assert json.load(handle)["done"] == [[0, 10]]
