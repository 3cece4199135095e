"""The file target zeroes ranges from several copy threads at once, on shares that refuse fallocate."""

import threading

from ansible_collections.xms.warm_migration.plugins.module_utils.copy import targets


def test_copy_threads_zeroing_at_once_on_a_share_without_fallocate_all_write_zeros(tmp_path, monkeypatch):
    """Mock of an NFSv3-like share: every fallocate mode refused, all threads inside the call at once (the
    race a real share shows only by chance). Each thread's range ends up zero and no thread fails."""
    threads_n = 4
    inside = threading.Barrier(threads_n, timeout=10)

    def refused(_fd, _mode, _offset, _length):
        inside.wait()
        return False

    monkeypatch.setattr(targets, "_fallocate", refused)
    path = tmp_path / "volume"
    path.write_bytes(b"\xff" * (threads_n << 20))
    target = targets.FileTarget(str(path))
    failures = []

    def zero(index):
        try:
            target.zero(index << 20, 1 << 20)
        except Exception as err:  # handed to the assertion below
            failures.append(err)

    workers = [threading.Thread(target=zero, args=(i,)) for i in range(threads_n)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    target.flush()
    target.close()
    assert failures == [] and path.read_bytes() == bytes(threads_n << 20)


def test_writeback_runs_join_only_near_ranges_in_offset_order():
    gap = targets.RUN_GAP
    far = 12288 + gap + 1  # one byte farther than a run joins
    ranges = [(8192, 4096), (0, 4096), (far, 4096), (far + 4096 + gap, 100)]
    assert targets._runs(ranges) == [(0, 12288), (far, far + 4096 + gap + 100)]  # pylint: disable=protected-access


def test_small_scattered_writes_from_several_threads_land_and_the_cache_window_stays_bounded(tmp_path):
    """A fragmented plan's 4 KiB writes, written back in batches: every byte lands where it was
    written, none elsewhere, and what is kept in the page cache stays within the window."""
    size, block = 64 << 20, 4096
    path = tmp_path / "volume"
    path.write_bytes(b"")
    with open(path, "r+b") as handle:
        handle.truncate(size)
    target = targets.FileTarget(str(path))
    offsets = list(range(0, size, 2 * block))  # every other block: 32 MiB of writes, twice the window
    peaks = []

    def write(share):
        for offset in share:
            target.write(offset.to_bytes(8, "little") * (block // 8), offset)
            peaks.append(target._cached_bytes)  # pylint: disable=protected-access

    workers = [threading.Thread(target=write, args=(offsets[i::4],)) for i in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    target.flush()
    target.close()
    data = path.read_bytes()
    assert max(peaks) <= targets.CACHE_WINDOW + targets.WRITEBACK_BATCH
    for offset in range(0, size, block):
        expected = offset.to_bytes(8, "little") * (block // 8) if offset % (2 * block) == 0 else bytes(block)
        assert data[offset : offset + block] == expected, offset
