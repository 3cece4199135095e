"""Benchmark of the copy engine against yardsticks measured in the same run.

    .venv/bin/python bench/copy_bench.py            # all five cases, one JSON line each
    .venv/bin/python bench/copy_bench.py full       # only the named cases

``ratio`` is always yardstick_s / engine_s: above 1 the engine is faster.
Every case runs ``ROUNDS`` times, alternating engine and yardstick, and reports
medians with the fastest and slowest round of each side, because this machine is
noisy. The disks are ``SIZE`` bytes, so that a full copy takes each side several
seconds here and fixed costs (start-up, the final flush) do not decide a ratio.
Both sides flush the target (nbdcopy with --flush), since the engine never
reports success before a flush.
"""

import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import checkout  # noqa: F401  # pylint: disable=unused-import  # imported for its effect: the collection importable

from ansible_collections.xms.warm_migration.plugins.module_utils.copy.extents import Extent
from ansible_collections.xms.warm_migration.plugins.module_utils.copy.journal import Journal

HERE = os.path.dirname(os.path.abspath(__file__))
ROUNDS = 3
GiB = 1 << 30
MiB = 1 << 20
SIZE = 32 * GiB  # 9.6 GiB of data at 30%: 5-10 s a full copy on this 2-core machine


class Server:
    """nbdkit on a unix socket, stopped on exit."""

    def __init__(self, workdir, *args):
        self.sock = os.path.join(workdir, f"nbdkit-{len(os.listdir(workdir))}.sock")
        self.proc = subprocess.Popen(
            ["nbdkit", "-U", self.sock, "-f", "--exit-with-parent", *args], stderr=subprocess.DEVNULL
        )
        while True:
            probe = socket.socket(socket.AF_UNIX)
            try:
                probe.connect(self.sock)
                break
            except OSError:
                time.sleep(0.02)
            finally:
                probe.close()
        self.uri = f"nbd+unix:///?socket={self.sock}"

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def fresh_target(path, size):
    if os.path.exists(path):
        os.unlink(path)
    with open(path, "wb") as handle:
        handle.truncate(size)
    os.sync()  # no dirty pages of an earlier round left to slow this one


def engine(source, target, extents_file=None):
    """Run the engine in a child; returns (seconds, peak RSS in MiB, stats); the stats carry its CPU seconds."""
    argv = [sys.executable, os.path.join(HERE, "run_copy.py"), source, target]
    if extents_file:
        argv += ["--extents", extents_file]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    status, usage = os.wait4(proc.pid, 0)[1:]
    if status:
        sys.exit(f"engine failed: {argv}")
    stats = json.loads(out)
    stats["cpu_s"] = usage.ru_utime + usage.ru_stime  # with Python's start-up, about 0.1 s
    return stats["seconds"], usage.ru_maxrss / 1024, stats


def nbdcopy(source, target, cpu=None):
    """nbdcopy's seconds; its CPU seconds are appended to ``cpu`` when given."""
    started = time.monotonic()
    proc = subprocess.Popen(["nbdcopy", "--flush", "--destination-is-zero", source, target])
    status, usage = os.wait4(proc.pid, 0)[1:]
    if status:
        sys.exit(f"nbdcopy failed: {source} -> {target}")
    if cpu is not None:
        cpu.append(usage.ru_utime + usage.ru_stime)
    return time.monotonic() - started


def read_only(source):
    """Seconds nbdcopy takes to read the source to nowhere: what the source and the socket allow."""
    started = time.monotonic()
    subprocess.run(["nbdcopy", source, "null:"], check=True)
    return time.monotonic() - started


def naive_delta(source, target, extents):
    """The peers' delta pattern: each changed extent read in pieces of up to 64 MiB, one request at a time."""
    import nbd

    started = time.monotonic()
    handle = nbd.NBD()
    handle.connect_uri(source)
    fd = os.open(target, os.O_WRONLY)
    for offset, length in extents:
        while length > 0:
            piece = min(length, 64 * MiB)
            os.pwrite(fd, handle.pread(piece, offset), offset)
            offset, length = offset + piece, length - piece
    os.fsync(fd)
    os.close(fd)
    handle.shutdown()
    return time.monotonic() - started


def emit(case, engine_s, yardstick_s, **extra):
    """One JSON line: the medians of both sides' rounds and their ratio, and each side's fastest and slowest round."""
    ours, theirs = statistics.median(engine_s), statistics.median(yardstick_s)
    print(
        json.dumps(
            {
                "case": case,
                "engine_s": round(ours, 3),
                "yardstick_s": round(theirs, 3),
                "ratio": round(theirs / ours, 2),
                "engine_min_max_s": [round(min(engine_s), 3), round(max(engine_s), 3)],
                "yardstick_min_max_s": [round(min(yardstick_s), 3), round(max(yardstick_s), 3)],
                "rounds": len(engine_s),
                **extra,
            }
        ),
        flush=True,
    )


def case_full(work):
    """1. Full copy of sparse-random SIZE (30%) to a file, against nbdcopy."""
    src = Server(work, "sparse-random", f"size={SIZE}", "percent=30", "seed=1")
    target = os.path.join(work, "full.img")
    ours, theirs, our_cpu, their_cpu, reading = [], [], [], [], []
    for _round in range(ROUNDS):
        fresh_target(target, SIZE)
        seconds, _rss, stats = engine(src.uri, target)
        ours.append(seconds)
        our_cpu.append(stats["cpu_s"])
        fresh_target(target, SIZE)
        theirs.append(nbdcopy(src.uri, target, their_cpu))
        reading.append(read_only(src.uri))
    src.stop()
    os.unlink(target)
    emit(
        f"full_copy_sparse_random_{SIZE // GiB}G",
        ours,
        theirs,
        yardstick="nbdcopy --flush",
        engine_cpu_s=round(statistics.median(our_cpu), 2),
        nbdcopy_cpu_s=round(statistics.median(their_cpu), 2),
        read_only_s=round(statistics.median(reading), 3),
    )


def make_changed_disk(work):
    """A SIZE raw disk from sparse-random, then 1% of it rewritten in scattered 64 KiB-1 MiB writes."""
    disk = os.path.join(work, "disk.raw")
    src = Server(work, "sparse-random", f"size={SIZE}", "percent=30", "seed=2")
    subprocess.run(["nbdcopy", src.uri, disk], check=True)
    src.stop()
    rng = random.Random(3)
    changed, total = [], 0
    with open(disk, "r+b") as handle:
        while total < SIZE // 100:
            length = rng.choice([64 << 10, 128 << 10, 256 << 10, 512 << 10, 1 << 20])
            offset = rng.randrange(0, SIZE - length, 64 << 10)
            handle.seek(offset)
            handle.write(rng.randbytes(length))
            changed.append([offset, length])
            total += length
    changed.sort()
    extents_file = os.path.join(work, "changed.json")
    with open(extents_file, "w") as handle:
        json.dump(changed, handle)
    return disk, changed, extents_file


def case_incremental(work, disk, changed, extents_file):
    """2. The 1% incremental against the engine's own full copy of the same disk."""
    src = Server(work, "file", disk)
    target = os.path.join(work, "incr.img")
    full, incr, ref = [], [], []
    for _round in range(ROUNDS):
        fresh_target(target, SIZE)
        seconds, _rss, stats = engine(src.uri, target)
        full.append(seconds)
        full_bytes = stats["bytes_read"]
        os.sync()
        incr.append(engine(src.uri, target, extents_file)[0])
        fresh_target(target, SIZE)
        ref.append(nbdcopy(src.uri, target))
    src.stop()
    os.unlink(target)
    share = statistics.median(incr) / statistics.median(full)
    changed_bytes = sum(length for _offset, length in changed)
    emit(
        f"incremental_1pct_of_{SIZE // GiB}G",
        incr,
        full,
        yardstick="engine full copy",
        incremental_share_of_full=round(share, 4),
        nbdcopy_full_s=round(statistics.median(ref), 3),
        changed_bytes=changed_bytes,
        changed_extents=len(changed),
        # The floor of incremental_share_of_full: the share of the full copy's bytes that changed. 1% of
        # the disk is 3.3% of what its full copy reads (30% allocated), so <= 0.03 needs the
        # incremental to copy faster per byte than the full copy; this says how it compares per byte.
        byte_share_of_full=round(changed_bytes / full_bytes, 4),
        time_per_byte_vs_full=round(share / (changed_bytes / full_bytes), 2),
    )


def case_wan(work, disk, changed, extents_file):
    """3. The same incremental behind a 2 ms per-read delay, against the one-request-at-a-time loop."""
    src = Server(work, "--filter=delay", "file", disk, "delay-read=2ms")
    target = os.path.join(work, "wan.img")
    fresh_target(target, SIZE)
    ours, theirs = [], []
    for _round in range(ROUNDS):
        ours.append(engine(src.uri, target, extents_file)[0])
        theirs.append(naive_delta(src.uri, target, changed))
    src.stop()
    os.unlink(target)
    emit(
        "incremental_over_2ms_link",
        ours,
        theirs,
        yardstick="sequential reads of <=64 MiB per extent",
    )


def case_memory(work):
    """4. A 64 GiB sparse source: peak RSS of the engine process (nbdcopy's for reference)."""
    src = Server(work, "sparse-random", "size=64G", "percent=1", "seed=4")
    target = os.path.join(work, "big.img")
    fresh_target(target, 64 * GiB)
    seconds, peak_mib, _stats = engine(src.uri, target)
    fresh_target(target, 64 * GiB)
    started = time.monotonic()
    proc = subprocess.Popen(["nbdcopy", "--flush", "--destination-is-zero", src.uri, target])
    usage = os.wait4(proc.pid, 0)[2]
    theirs = time.monotonic() - started
    src.stop()
    os.unlink(target)
    emit(
        "sparse_64G_memory",
        [seconds],
        [theirs],
        yardstick="nbdcopy --flush",
        peak_rss_mib=round(peak_mib, 1),
        nbdcopy_peak_rss_mib=round(usage.ru_maxrss / 1024, 1),
        rss_limit_mib=256,
    )


def case_journal(work):
    """5. Checkpoints of a fragmented disk's plan: does one cost more when the plan holds more extents?

    Each checkpoint records one 1 GiB checkpoint's worth of 512 KiB pieces (2048 extents), the
    engine's default; the plans hold every other 4 KiB block, as a fragmented thin disk's
    allocated areas do. The yardstick is the checkpoint of the smallest plan; beside it, what
    rewriting the whole plan at each checkpoint (the first journal's way) costs at 1 million."""

    def plan(count):
        return [Extent(i * 8192, 4096) for i in range(count)]

    def checkpoints(count, path):
        extents = plan(count)
        journal = Journal(path, extents, count * 8192)
        journal.checkpoint([])  # the plan's header, written once
        header = os.path.getsize(path)
        times = []
        for start in range(0, 20 * 2048, 2048):
            done = extents[start % count : start % count + 2048]
            began = time.monotonic()
            journal.checkpoint(done)
            times.append(time.monotonic() - began)
        appended = (os.path.getsize(path) - header) / len(times)
        os.unlink(path)
        return times, header, appended

    path = os.path.join(work, "journal")
    small, _header, _appended = checkpoints(10_000, path)
    large, header, appended = checkpoints(1_000_000, path)
    extents = plan(1_000_000)
    rewrite = []
    for _round in range(3):  # the whole plan as JSON, atomically replaced, at every checkpoint
        began = time.monotonic()
        payload = json.dumps({"extents": [[e.offset, e.length] for e in extents], "done": []}).encode()
        with open(path, "wb") as handle:
            handle.write(payload)
            os.fsync(handle.fileno())
        os.replace(path, path + ".old")
        rewrite.append(time.monotonic() - began)
    emit(
        "journal_checkpoint_of_1M_extent_plan",
        large,
        small,
        yardstick="the same checkpoint of a 10,000-extent plan",
        plan_extents=len(extents),
        checkpoint_ms=round(statistics.median(large) * 1000, 2),
        yardstick_checkpoint_ms=round(statistics.median(small) * 1000, 2),
        header_bytes_written_once=header,
        bytes_appended_per_checkpoint=round(appended),
        whole_plan_rewrite_s=round(statistics.median(rewrite), 3),
        rewrite_vs_checkpoint=round(statistics.median(rewrite) / statistics.median(large), 1),
    )


def main():
    wanted = set(sys.argv[1:]) or {"full", "incremental", "wan", "memory", "journal"}
    for tool in ("nbdkit", "nbdcopy"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: run scripts/setup-host.sh")
    work = tempfile.mkdtemp(prefix="xms-bench-", dir=os.environ.get("BENCH_DIR", "/var/tmp"))
    try:
        if "full" in wanted:
            case_full(work)
        if wanted & {"incremental", "wan"}:
            disk, changed, extents_file = make_changed_disk(work)
            if "incremental" in wanted:
                case_incremental(work, disk, changed, extents_file)
            if "wan" in wanted:
                case_wan(work, disk, changed, extents_file)
        if "memory" in wanted:
            case_memory(work)
        if "journal" in wanted:
            case_journal(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
