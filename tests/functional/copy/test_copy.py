"""The copy engine against real NBD servers (nbdkit, qemu-storage-daemon) and real targets."""

import os
import random
import signal
import subprocess
import sys
import threading
import time

import pytest
from storage_daemon import StorageDaemon

from ansible_collections.xms.warm_migration.plugins.module_utils.copy.copier import CopyOptions, RateCap, copy_extents
from ansible_collections.xms.warm_migration.plugins.module_utils.copy.errors import (
    CopyStopped,
    InvalidUriError,
    PlanError,
    ReadError,
    SourceUnreachableError,
    TargetTooSmallError,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.copy.extents import Extent, merge_extents, total_bytes
from ansible_collections.xms.warm_migration.plugins.module_utils.copy.journal import read_journal, remaining_extents
from ansible_collections.xms.warm_migration.plugins.module_utils.copy.nbd_source import plan_allocated, plan_dirty
from ansible_collections.xms.warm_migration.plugins.module_utils.copy.verify import verify_extents

from ..conftest import require, sha256_file, sha256_nbd
from . import drop_proxy

MiB = 1 << 20
COLLECTION_PARENT = sys.modules["ansible_collections"].__path__[0].rsplit("/ansible_collections", 1)[0]


def blank(path, size):
    with open(path, "wb") as handle:
        handle.truncate(size)
    return str(path)


def allocated_bytes(path):
    return os.stat(path).st_blocks * 512


def test_full_copy_is_identical_and_keeps_holes(servers, tmp_path):
    source = servers.nbdkit("sparse-random", "size=128M", "percent=20", "seed=7")
    target = blank(tmp_path / "disk.img", 128 * MiB)
    plan = plan_allocated(source)
    stats = copy_extents(source, target, plan)
    assert sha256_file(target) == sha256_nbd(source)
    assert stats.bytes_read == sum(e.length for e in plan) < 128 * MiB * 0.5
    # Holes stay holes: the target allocates about what the source holds, not the whole disk.
    assert allocated_bytes(target) <= stats.bytes_written + 4 * MiB


def test_zeros_are_skipped_only_where_the_target_says_it_reads_zero(servers, tmp_path):
    """A sparse file's holes are checked (SEEK_DATA), never assumed: zeros over a hole cost nothing."""
    source = servers.nbdkit("sparse-random", "size=64M", "percent=20", "seed=3")
    target = blank(tmp_path / "fresh.img", 64 * MiB)
    stats = copy_extents(source, target, [Extent(0, 64 * MiB)])
    assert sha256_file(target) == sha256_nbd(source)
    assert stats.bytes_skipped_zero > 0 and stats.bytes_zeroed == 0


def test_full_copy_over_old_data_writes_zeros(servers, tmp_path):
    """A reused volume: ranges that are zero on the source are zeroed on the target, never assumed."""
    source = servers.nbdkit("sparse-random", "size=64M", "percent=20", "seed=3")
    target = str(tmp_path / "dirty.img")
    with open(target, "wb") as handle:
        handle.write(random.Random(1).randbytes(64 * MiB))
    stats = copy_extents(source, target, [Extent(0, 64 * MiB)])
    assert sha256_file(target) == sha256_nbd(source)
    assert stats.bytes_zeroed > 0


def test_copy_to_a_loop_device(servers, tmp_path):
    require("losetup")
    source = servers.nbdkit("sparse-random", "size=64M", "percent=30", "seed=11")
    backing = blank(tmp_path / "loop.img", 64 * MiB)
    device = subprocess.run(["losetup", "-f", "--show", backing], check=True, capture_output=True, text=True)
    device = device.stdout.strip()
    try:
        copy_extents(source, device, [Extent(0, 64 * MiB)])
        assert sha256_file(device, 64 * MiB) == sha256_nbd(source)
    finally:
        subprocess.run(["losetup", "-d", device], check=True)
    assert sha256_file(backing) == sha256_nbd(source)


def test_copy_to_an_nbd_target(servers):
    source = servers.nbdkit("sparse-random", "size=32M", "percent=40", "seed=5")
    target = servers.nbdkit("memory", "32M")
    copy_extents(source, target, plan_allocated(source))
    assert sha256_nbd(target) == sha256_nbd(source)


def test_dirty_bitmap_plan_copies_exactly_the_changed_areas(tmp_path):
    """Writes through a live export show up in a QEMU dirty bitmap; copying that plan syncs the target."""
    image = str(tmp_path / "disk.qcow2")
    subprocess.run([require("qemu-img"), "create", "-q", "-f", "qcow2", image, "64M"], check=True)
    subprocess.run(
        [require("qemu-io"), "-f", "qcow2", "-c", "write -P 0x5a 0 8M", "-c", "write -P 0x33 40M 2M", image],
        check=True,
        capture_output=True,
    )
    qsd = StorageDaemon(str(tmp_path), image)
    try:
        qsd.cmd("block-dirty-bitmap-add", node="disk0", name="cbt1", persistent=True)
        live = qsd.export("live", writable=True)
        target = blank(tmp_path / "target.img", 64 * MiB)
        copy_extents(live, target, plan_allocated(live))  # the seed

        import nbd

        writer = nbd.NBD()
        writer.connect_uri(live)
        rng = random.Random(42)
        written = []
        for _write in range(12):
            length = rng.choice([64 << 10, 128 << 10, 512 << 10, 1 << 20])
            offset = rng.randrange(0, 64 * MiB - length, 64 << 10)
            writer.pwrite(rng.randbytes(length), offset)
            written.append(Extent(offset, length))
        writer.flush()
        writer.shutdown()
        qsd.rotate("cbt1", "cbt2")  # cbt1 keeps what changed since the seed, cbt2 tracks what comes next
        view = qsd.export("view", bitmaps=["cbt1"])
        plan = plan_dirty(view, "cbt1")
        assert plan == merge_extents(written)  # writes are 64 KiB-aligned, the bitmap's granularity
        stats = copy_extents(view, target, plan)
        assert stats.bytes_read == sum(e.length for e in plan)
        assert sha256_file(target) == sha256_nbd(view)
    finally:
        qsd.stop()


def _journal_done(path):
    recorded = read_journal(path)
    return total_bytes(recorded.done) if recorded else 0


@pytest.mark.parametrize("kill_at", [0.0, 0.3, 0.8])
def test_kill_9_then_rerun_resumes_and_is_identical(servers, tmp_path, kill_at):
    # A slow source (delay per read) so the child can be killed part-way, at a chosen point.
    params = ("sparse-random", "size=96M", "percent=50", "seed=9")
    slow = servers.nbdkit("--filter=delay", *params, "rdelay=20ms")
    target = blank(tmp_path / "disk.img", 96 * MiB)
    journal = str(tmp_path / "copy.journal")
    total = sum(e.length for e in plan_allocated(slow))
    env = {**os.environ, "PYTHONPATH": COLLECTION_PARENT}
    child = subprocess.Popen(
        [sys.executable, os.path.join(os.path.dirname(__file__), "copy_child.py"), slow, target, journal], env=env
    )
    deadline = time.monotonic() + 120
    while _journal_done(journal) < kill_at * total and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert child.poll() is None, "the copy finished before it could be killed; slow the source down"
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert _journal_done(journal) >= kill_at * total
    assert remaining_extents(journal) != [], "a killed copy must not look complete"

    # The rerun reads from a new server with the same content, as a rerun gets a new export in production
    # (and because nbdkit itself may abort when a client dies with reads in flight).
    source = servers.nbdkit(*params)
    stats = copy_extents(source, target, plan_allocated(source), journal_path=journal)
    assert sha256_file(target) == sha256_nbd(source)
    assert stats.resumed_bytes >= kill_at * total
    assert stats.bytes_read <= total - stats.resumed_bytes
    assert remaining_extents(journal) == []


def test_a_finished_copy_is_not_repeated(servers, tmp_path):
    source = servers.nbdkit("sparse-random", "size=32M", "percent=30", "seed=2")
    target = blank(tmp_path / "disk.img", 32 * MiB)
    journal = str(tmp_path / "j")
    plan = plan_allocated(source)
    first = copy_extents(source, target, plan, journal_path=journal)
    again = copy_extents(source, target, plan, journal_path=journal)
    assert first.bytes_read > 0 and again.bytes_read == 0 and again.resumed_bytes == first.bytes_total


def test_transient_read_errors_are_retried(servers, tmp_path):
    clean = servers.nbdkit("sparse-random", "size=64M", "percent=50", "seed=4")
    flaky = servers.nbdkit(
        "--filter=error", "sparse-random", "size=64M", "percent=50", "seed=4", "error-pread-rate=2%", "error-pread=EIO"
    )
    target = blank(tmp_path / "disk.img", 64 * MiB)
    stats = copy_extents(
        flaky,
        target,
        plan_allocated(clean),
        # 512 requests: at 2% the chance that none fails (and nothing is retried) is 0.98**512, about 3e-5.
        options=CopyOptions(request_size=64 << 10, retry_delay=0.01),
    )
    assert stats.retries > 0
    assert sha256_file(target) == sha256_nbd(clean)


def test_a_persistent_read_error_fails_naming_the_extent(servers, tmp_path):
    trigger = tmp_path / "fail-now"
    source = servers.nbdkit(
        "--filter=error", "--filter=delay", "sparse-random", "size=64M", "percent=50", "seed=4",
        "rdelay=20ms", "error-pread-rate=100%", "error-pread=EIO", f"error-file={trigger}",
    )  # fmt: skip
    target = blank(tmp_path / "disk.img", 64 * MiB)
    journal = str(tmp_path / "j")

    def fail_once_some_progress_is_journaled():
        while not _journal_done(journal):
            time.sleep(0.01)
        trigger.touch()  # from now on every read fails

    threading.Thread(target=fail_once_some_progress_is_journaled, daemon=True).start()
    options = CopyOptions(
        request_size=256 << 10, max_in_flight=4, retries=2, retry_delay=0.01,
        checkpoint_bytes=1 << 20, checkpoint_seconds=0.05,
    )  # fmt: skip
    with pytest.raises(ReadError) as err:
        copy_extents(source, target, plan_allocated(source), options=options, journal_path=journal)
    assert "offset" in str(err.value) and "EIO" in str(err.value)
    assert err.value.extent.length > 0
    assert _journal_done(journal) > 0
    assert remaining_extents(journal), "the journal must not claim the copy is complete"


def test_a_source_that_drops_the_connection_at_one_offset_fails_after_the_retry_limit(servers, tmp_path):
    """Every read of one offset breaks the connection: a ReadError naming it, not an endless reconnect loop."""
    real = servers.nbdkit("pattern", "size=64M")
    proxy = drop_proxy.start(tmp_path, real, offset=40 * MiB + 4096)
    target = blank(tmp_path / "disk.img", 64 * MiB)
    options = CopyOptions(request_size=1 * MiB, max_in_flight=8, retries=3, retry_delay=0.01)
    outcome = {}

    def copy():
        try:
            copy_extents(proxy.uri, target, [Extent(0, 64 * MiB)], options=options, journal_path=str(tmp_path / "j"))
        except Exception as err:  # the assertions below say which one it must be
            outcome["error"] = err

    worker = threading.Thread(target=copy, daemon=True)
    worker.start()
    worker.join(120)
    proxy.close()
    assert not worker.is_alive(), "the copy kept reconnecting to a source that drops it at one offset"
    err = outcome.get("error")
    assert isinstance(err, ReadError), err
    assert err.extent.offset <= 40 * MiB + 4096 < err.extent.offset + err.extent.length
    assert err.attempts == 4  # libnbd reports the break as ENOTCONN on a read, or as a lost connection
    # A break that cut several reads is charged to none of them (they are sent again one at a
    # time), so the first break may come on top of the four charged to the dropping offset.
    assert proxy.drops in (4, 5)
    assert remaining_extents(str(tmp_path / "j")) != [], "the journal must not claim the copy is complete"


def test_a_target_too_small_fails_before_any_write(servers, tmp_path):
    source = servers.nbdkit("sparse-random", "size=64M", "percent=50", "seed=1")
    target = str(tmp_path / "small.img")
    with open(target, "wb") as handle:
        handle.write(b"keep me" * 1000)
    before = sha256_file(target)
    with pytest.raises(TargetTooSmallError) as err:
        copy_extents(source, target, plan_allocated(source))
    assert "67108864" in str(err.value) and err.value.parameter == "target"
    assert sha256_file(target) == before


@pytest.mark.parametrize(
    "uri, words",
    [
        ("http://example.com/disk", "not an NBD URI"),
        ("nbd+unix:///export", "names no socket"),
        ("nbd+unix://host/export?socket=/x", "host part"),
        ("nbd://:10809/export", "names no host"),
        ("nbd://host:99999999/", "invalid port"),
    ],
)
def test_malformed_uris_are_rejected_clearly(tmp_path, uri, words):
    with pytest.raises(InvalidUriError) as err:
        copy_extents(uri, blank(tmp_path / "t.img", MiB), [Extent(0, MiB)])
    assert words in str(err.value) and err.value.parameter == "source"


def test_an_unreachable_server_fails_clearly(tmp_path):
    with pytest.raises(SourceUnreachableError) as err:
        copy_extents(f"nbd+unix:///?socket={tmp_path}/nothing.sock", blank(tmp_path / "t.img", MiB), [])
    assert "does not exist" in str(err.value)


def test_bandwidth_cap_is_respected(servers, tmp_path):
    source = servers.nbdkit("pattern", "size=16M")
    target = blank(tmp_path / "disk.img", 16 * MiB)
    cap = 8 * MiB  # bytes/s: 16 MiB must take about 2 s
    stats = copy_extents(
        source, target, [Extent(0, 16 * MiB)], options=CopyOptions(rate_cap=RateCap(cap), request_size=256 << 10)
    )
    # A lower bound that follows from the cap itself, not an absolute timing.
    assert stats.elapsed_s >= (16 * MiB - (256 << 10)) / cap * 0.9
    assert sha256_file(target) == sha256_nbd(source)


def test_one_cap_shared_by_two_copies_bounds_their_sum(servers, tmp_path):
    """The disks of a sync copy at once under one bandwidth_limit: the cap holds for the sync, not per disk."""
    sources = [servers.nbdkit("pattern", "size=8M"), servers.nbdkit("pattern", "size=8M")]
    targets = [blank(tmp_path / f"disk{i}.img", 8 * MiB) for i in range(2)]
    cap = RateCap(8 * MiB)  # 16 MiB in all: about 2 s together (1 s each if the cap were per copy)
    results = []
    copies = [
        threading.Thread(target=lambda s=s, t=t: results.append(copy_extents(
            s, t, [Extent(0, 8 * MiB)], options=CopyOptions(rate_cap=cap, request_size=256 << 10))))
        for s, t in zip(sources, targets)
    ]  # fmt: skip
    started = time.monotonic()
    for copy in copies:
        copy.start()
    for copy in copies:
        copy.join()
    # A lower bound that follows from the cap itself, not an absolute timing.
    assert time.monotonic() - started >= (16 * MiB - 2 * (256 << 10)) / cap.limit * 0.9
    assert len(results) == 2
    assert all(sha256_file(t) == sha256_nbd(s) for s, t in zip(sources, targets))


def test_a_stopped_copy_journals_what_it_flushed_and_the_rerun_copies_only_the_rest(servers, tmp_path):
    """What a sync does to its other disks when one fails: they stop, and lose nothing they wrote."""
    params = ("sparse-random", "size=64M", "percent=50", "seed=5")
    slow = servers.nbdkit("--filter=delay", *params, "rdelay=10ms")
    target = blank(tmp_path / "disk.img", 64 * MiB)
    journal = str(tmp_path / "j")
    stop = threading.Event()
    seen = []

    def stop_part_way(progress):  # reports come every half second: stop at the second one
        seen.append(progress.done)
        if len(seen) == 2:
            stop.set()

    # About 1.3 s of reads; no periodic checkpoint can happen: whatever the journal holds, the stop wrote.
    options = CopyOptions(request_size=64 << 10, max_in_flight=4, checkpoint_bytes=1 << 40, checkpoint_seconds=3600)
    with pytest.raises(CopyStopped):
        copy_extents(slow, target, plan_allocated(slow), options=options, journal_path=journal, progress=stop_part_way,
                     stop=stop)  # fmt: skip
    saved = _journal_done(journal)
    assert saved >= max(seen) > 0
    assert remaining_extents(journal)

    source = servers.nbdkit(*params)
    again = copy_extents(source, target, plan_allocated(source), journal_path=journal)
    assert again.resumed_bytes == saved and again.bytes_read <= again.bytes_total - saved
    assert sha256_file(target) == sha256_nbd(source)


def test_verify_finds_a_corrupted_byte(servers, tmp_path):
    source = servers.nbdkit("pattern", "size=16M")
    target = blank(tmp_path / "disk.img", 16 * MiB)
    copy_extents(source, target, [Extent(0, 16 * MiB)])
    assert verify_extents(source, target, [Extent(0, 16 * MiB)]).ok
    with open(target, "r+b") as handle:
        handle.seek(9 * MiB + 123)
        handle.write(b"\xff")
    result = verify_extents(source, target, [Extent(0, 16 * MiB)])
    assert len(result.mismatches) == 1
    bad = result.mismatches[0]
    assert bad.offset <= 9 * MiB + 123 < bad.end


def test_progress_reports_reach_the_total(servers, tmp_path):
    source = servers.nbdkit("sparse-random", "size=32M", "percent=30", "seed=8")
    seen = []
    stats = copy_extents(source, blank(tmp_path / "d.img", 32 * MiB), plan_allocated(source), progress=seen.append)
    assert seen and seen[-1].done == seen[-1].total == stats.bytes_total


def test_a_plan_beyond_the_source_is_refused_before_any_write(servers, tmp_path):
    source = servers.nbdkit("pattern", "size=8M")
    target = blank(tmp_path / "disk.img", 16 * MiB)
    with pytest.raises(PlanError) as err:
        copy_extents(source, target, [Extent(4 * MiB, 8 * MiB)])
    assert err.value.parameter == "extents" and "12582912" in str(err.value)
    assert allocated_bytes(target) == 0
