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
