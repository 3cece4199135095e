"""The downtime projection: rates from the sync history, the final delta, conversion and instance times."""

import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest

from ansible_collections.xms.warm_migration.plugins.module_utils.migration.projection import (
    DEFAULT_CONVERSION_S,
    HostTimes,
    SyncSample,
    format_history,
    parse_history,
    project,
    rates,
)

T0 = datetime(2026, 11, 24, 1, 0, 0, tzinfo=timezone.utc)
MB = 1_000_000


def history():
    """A fast seed, then incrementals every 10 minutes of 60 MB at 100 MB/s (a bandwidth limit), 1.9 s fixed."""
    return [
        SyncSample(T0, "seed", 1000 * MB, 6.9, 5.0),
        SyncSample(T0 + timedelta(minutes=10), "incremental", 60 * MB, 2.5, 0.6),
        SyncSample(T0 + timedelta(minutes=20), "incremental", 60 * MB, 2.5, 0.6),
    ]


def test_rates_come_from_the_incrementals_and_the_newest_copy():
    change, copy, fixed = rates(history())
    assert change == pytest.approx(100_000)  # 60 MB per 600 s
    assert copy == pytest.approx(100 * MB, rel=0.01)  # the newest sync's, not the faster seed's
    assert fixed == pytest.approx(1.9, abs=0.05)


def test_the_projection_adds_final_delta_conversion_and_instance():
    p = project(history(), since_snapshot_s=300, conversion_s=240, instance_s=20)
    assert p.final_delta_bytes == 30 * MB and p.final_sync_s == pytest.approx(1.9 + 0.3, abs=0.05)
    assert p.downtime_s == pytest.approx(p.final_sync_s + 240 + 20) and p.conversion_measured
    unmeasured = project(history(), since_snapshot_s=300, conversion_s=None, instance_s=None)
    assert unmeasured.conversion_s == DEFAULT_CONVERSION_S and not unmeasured.conversion_measured
    skipped = project(history(), since_snapshot_s=300, conversion_s=240, instance_s=20, convert=False)
    assert skipped.conversion_s == 0


def test_no_projection_before_an_incremental():
    assert project(history()[:1], since_snapshot_s=60, conversion_s=None, instance_s=None) is None


def test_the_history_survives_the_record_and_a_hand_edited_entry_is_skipped():
    text = format_history(history())
    assert len(text) < 255 and parse_history(text) == history()
    assert parse_history(text + ";garbage") == history()


def test_a_conversion_host_keeps_what_it_measured(tmp_path):
    times = HostTimes(str(tmp_path))
    assert times.load() == {}
    times.save(conversion_s=241.26, instance_s=None)
    times.save(instance_s=19.0)
    assert times.load() == {"conversion_s": 241.3, "instance_s": 19.0}


def test_a_conversion_host_estimates_by_the_median_of_its_last_cutovers(tmp_path):
    times = HostTimes(str(tmp_path))
    for instance_s in (30.0, 4.0, 7.0, 5.0):
        times.save(instance_s=instance_s)
    assert times.load() == {"instance_s": 5.0}  # of 4, 7 and 5: the 30 s of the oldest cutover is forgotten


def test_cutovers_ending_at_once_on_one_host_each_keep_their_measurement(tmp_path):
    """Processes saving at once (a wave's cutovers on one conversion host): none loses another's measure, and
    none trips on another's temporary file (they once shared one fixed name)."""
    script = (
        "import sys\n"
        "from ansible_collections.xms.warm_migration.plugins.module_utils.migration.projection import HostTimes\n"
        "for _ in range(200):\n"
        "    HostTimes(sys.argv[1]).save(**{sys.argv[2]: 1.0})\n"
    )
    parent = sys.modules["ansible_collections"].__path__[0].rsplit("/ansible_collections", 1)[0]
    env = {**os.environ, "PYTHONPATH": parent}
    runs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path), key], env=env, stderr=subprocess.PIPE)
            for key in ("shutdown_s", "conversion_s", "instance_s")]  # fmt: skip
    errors = [run.communicate(timeout=60)[1] for run in runs]
    assert [run.returncode for run in runs] == [0, 0, 0], errors
    assert HostTimes(str(tmp_path)).load() == {"shutdown_s": 1.0, "conversion_s": 1.0, "instance_s": 1.0}
