"""The downtime projection: rates from the sync history, the final delta, conversion and instance times."""

import os
import random
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest

from ansible_collections.xms.warm_migration.plugins.module_utils.migration.projection import (
    DEFAULT_CONVERSION_S,
    DiskChanges,
    HostTimes,
    SyncSample,
    changed_after,
    epoch,
    format_copied,
    format_history,
    parse_copied,
    parse_history,
    project,
    rates,
    write_rate,
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


def test_rates_come_from_the_newest_copy_and_the_last_syncs_fixed_costs():
    copy, fixed = rates(history())
    assert copy == pytest.approx(100 * MB, rel=0.01)  # the newest sync's, not the faster seed's
    assert fixed == pytest.approx(1.9, abs=0.05)


def test_the_projection_adds_final_delta_conversion_and_instance():
    """Disks far larger than their writes (100 GB): the final delta is the change rate times the time."""
    disks = [DiskChanges(100 * 10**9, {})]
    p = project(history(), disks, since_snapshot_s=300, conversion_s=240, instance_s=20)
    assert p.change_rate == pytest.approx(100_000, rel=0.001)  # 60 MB per 600 s
    assert p.final_delta_bytes == pytest.approx(30 * MB, rel=0.001)
    assert p.final_sync_s == pytest.approx(1.9 + 0.3, abs=0.05)
    assert p.downtime_s == pytest.approx(p.final_sync_s + 240 + 20) and p.conversion_measured
    unmeasured = project(history(), disks, since_snapshot_s=300, conversion_s=None, instance_s=None)
    assert unmeasured.conversion_s == DEFAULT_CONVERSION_S and not unmeasured.conversion_measured
    skipped = project(history(), disks, since_snapshot_s=300, conversion_s=240, instance_s=20, convert=False)
    assert skipped.conversion_s == 0


def test_no_projection_before_an_incremental():
    assert project(history()[:1], [], since_snapshot_s=60, conversion_s=None, instance_s=None) is None


def test_the_uniform_writes_curve_matches_random_writes_on_a_small_disk():
    """The model against its premise: 256 KiB writes at random places of a 64 MiB disk (the downtime
    bench's writer). The distinct bytes they change after 10 s and after 70 s at 2 MB/s are what
    write_rate (from the 10 s) and changed_after (to 70 s) say, within a few percent; the linear
    extrapolation says 1.7 times the disk."""
    block, capacity, rate = 256 << 10, 64 << 20, 2 * MB
    rng = random.Random(7)
    written, changed = set(), {}
    for n in range(1, int(70 * rate / block) + 1):
        written.add(rng.randrange(capacity // block))
        changed[n * block / rate] = len(written) * block
    at_10 = changed[max(t for t in changed if t <= 10)]
    at_70 = changed[max(changed)]
    w = write_rate(at_10, 10, capacity)
    assert w == pytest.approx(rate, rel=0.1)
    assert changed_after(w, 70, capacity) == pytest.approx(at_70, rel=0.05)
    assert at_10 / 10 * 70 > 1.5 * capacity  # what the linear projection said


def test_each_disk_saturates_at_its_own_capacity():
    """A busy 64 MiB disk beside a quiet 100 GB one: the busy disk's delta stops at its capacity, the quiet
    one's grows linearly; one pool of their summed capacity would say the busy disk's writes were spread
    over 100 GB."""
    small, big = 64 << 20, 100 * 10**9
    samples = [
        SyncSample(T0, "seed", 1000 * MB, 6.9, 5.0),
        SyncSample(T0 + timedelta(seconds=10), "incremental", 30 * MB, 8.0, 7.5),
        SyncSample(T0 + timedelta(seconds=20), "incremental", 30 * MB, 8.0, 7.5),
    ]
    busy = {epoch(s.snapshot_at): 20 * MB for s in samples[1:]}
    quiet = {epoch(s.snapshot_at): 10 * MB for s in samples[1:]}
    p = project(samples, [DiskChanges(small, busy), DiskChanges(big, quiet)], since_snapshot_s=600,
                conversion_s=0, instance_s=0)  # fmt: skip
    assert p.final_delta_bytes == pytest.approx(small + 600 * MB, rel=0.01)
    assert p.change_rate == pytest.approx(write_rate(20 * MB, 10, small) + 1 * MB, rel=0.001)
    pooled = project(samples, [DiskChanges(small, {}), DiskChanges(big, quiet)], since_snapshot_s=600,
                     conversion_s=0, instance_s=0)  # fmt: skip
    assert pooled.final_delta_bytes == pytest.approx(600 * 3 * MB, rel=0.01)  # no per-disk bytes: one pool


def test_a_disk_changed_whole_projects_the_whole_disk():
    later = T0 + timedelta(seconds=5)
    samples = [SyncSample(T0, "seed", 64 * MB, 2, 1), SyncSample(later, "incremental", 64 * MB, 2, 1)]
    p = project(samples, [DiskChanges(64 * MB, {epoch(samples[1].snapshot_at): 64 * MB})], since_snapshot_s=60,
                conversion_s=0, instance_s=0)  # fmt: skip
    assert p.final_delta_bytes == pytest.approx(64 * MB, rel=0.001)


def test_a_disks_bytes_survive_its_record_newest_kept():
    copied = {1764550000 + n: n * 10**12 for n in range(10)}
    text = format_copied(copied)
    assert len(text) < 255 and parse_copied(text) == dict(list(copied.items())[-6:])
    assert parse_copied(text + ";x:1;2:-1") == parse_copied(text)


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
