"""The engine demo: a warm copy of a disk that keeps changing, with real change tracking.

A qemu-storage-daemon serves a 512 MiB qcow2 disk; a writer thread keeps
rewriting random 64 KiB-1 MiB blocks of it, as a running VM would. The demo
seeds a target, runs incremental syncs while the writer goes on (each copies
only what QEMU's dirty bitmap recorded since the previous one), stops the
writer ("the guest is shut down"), runs the final sync, prints the metrics a
migration reports, and proves the target equals the source byte for byte.

(The migration lifecycle on the vSphere and OpenStack labs will replace this
demo; the copy engine here is the same one.)
"""

import hashlib
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path[:0] = [os.path.join(ROOT, "tests", "output", "collection"), os.path.join(ROOT, "lab", "nbd")]

import nbd  # noqa: E402
from storage_daemon import StorageDaemon  # noqa: E402

from ansible_collections.xms.warm_migration.plugins.module_utils.copy.copier import (  # noqa: E402
    CopyOptions,
    copy_extents,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.copy.nbd_source import (  # noqa: E402
    plan_allocated,
    plan_dirty,
)

MiB = 1 << 20
SIZE = 512 * MiB


class Writer(threading.Thread):
    """Rewrites random blocks of the live disk until stopped, like a busy guest."""

    def __init__(self, uri: str) -> None:
        super().__init__(daemon=True)
        self.uri = uri
        self.stop = threading.Event()
        self.written = 0

    def run(self) -> None:
        handle = nbd.NBD()
        handle.connect_uri(self.uri)
        rng = random.Random(7)
        while not self.stop.is_set():
            length = rng.choice([64 << 10, 256 << 10, 1 << 20])
            handle.pwrite(rng.randbytes(length), rng.randrange(0, SIZE - length, 64 << 10))
            self.written += length
            time.sleep(0.02)
        handle.flush()
        handle.shutdown()


def digest(read, size: int) -> str:
    sha = hashlib.sha256()
    for offset in range(0, size, 16 * MiB):
        sha.update(read(min(16 * MiB, size - offset), offset))
    return sha.hexdigest()


def main() -> None:
    work = tempfile.mkdtemp(prefix="xms-demo-")
    image, target = os.path.join(work, "vm-disk.qcow2"), os.path.join(work, "volume.raw")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", image, str(SIZE)], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x42 0 96M", "-c", "write -P 0x17 200M 64M", image],
                   check=True, capture_output=True)  # fmt: skip
    with open(target, "wb") as handle:
        handle.truncate(SIZE)  # a fresh volume: reads as zeros
    qsd = StorageDaemon(work, image)
    live = qsd.export("live", writable=True)
    metrics = {"bytes_full": 0, "bytes_incr": 0, "sync_count": 0}
    rows = []

    def sync(kind: str, plan, source: str, epoch: int) -> None:
        started = datetime.now(timezone.utc)
        stats = copy_extents(source, target, plan, options=CopyOptions(target_is_zero=(kind == "seed")))
        metrics["bytes_full" if kind == "seed" else "bytes_incr"] += stats.bytes_read
        metrics["sync_count"] += 1
        metrics["last_sync"], metrics["rate"] = started, stats.rate
        rows.append((f"{kind} #{epoch}", len(plan), stats.bytes_read, stats.elapsed_s, stats.rate))

    writer = Writer(live)
    try:
        qsd.cmd("block-dirty-bitmap-add", node="disk0", name="cbt0")  # tracks every write from now on
        writer.start()
        sync("seed", plan_allocated(live), live, 0)
        for epoch in (1, 2):
            time.sleep(1.0)  # the guest keeps working between syncs
            qsd.rotate(f"cbt{epoch - 1}", f"cbt{epoch}")
            view = qsd.export(f"epoch{epoch}", bitmaps=[f"cbt{epoch - 1}"])
            sync("incremental", plan_dirty(view, f"cbt{epoch - 1}"), view, epoch)
        writer.stop.set()  # cutover: the guest is shut down first ...
        writer.join()
        qsd.rotate("cbt2", "cbt3")
        final = qsd.export("final", bitmaps=["cbt2"])
        sync("final", plan_dirty(final, "cbt2"), final, 3)  # ... then the final delta

        print(f"\n{'sync':<16}{'extents':>8}{'bytes':>14}{'seconds':>10}{'MB/s':>10}")
        for name, extents, nbytes, seconds, rate in rows:
            print(f"{name:<16}{extents:>8}{nbytes:>14}{seconds:>10.3f}{rate / 1e6:>10.1f}")
        lag = (datetime.now(timezone.utc) - metrics["last_sync"]).total_seconds()
        print(f"\nLast Sync {metrics['last_sync']:%Y-%m-%dT%H:%M:%SZ}  Lag {lag:.1f}s  "
              f"Bytes (Full) {metrics['bytes_full']}  Bytes (Incr) {metrics['bytes_incr']}  "
              f"Sync Count {metrics['sync_count']}  Rate {metrics['rate'] / 1e6:.1f} MB/s  "
              f"(the writer changed {writer.written} bytes meanwhile)")  # fmt: skip
        reader = nbd.NBD()
        reader.connect_uri(final)
        source_sum = digest(reader.pread, SIZE)
        reader.shutdown()
        fd = os.open(target, os.O_RDONLY)
        target_sum = digest(lambda n, o: os.pread(fd, n, o), SIZE)
        os.close(fd)
        print(f"source sha256 {source_sum}\ntarget sha256 {target_sum}")
        if source_sum != target_sum:
            sys.exit("FAILED: the target differs from the source")
        print("OK: the target equals the source's final state byte for byte")
    finally:
        writer.stop.set()
        qsd.stop()
        subprocess.run(["rm", "-rf", work], check=False)


if __name__ == "__main__":
    main()
