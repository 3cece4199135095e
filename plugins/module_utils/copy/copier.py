"""The copy engine: move a plan's extents from an NBD source to a target, fast and safely.

How it is fast: one NBD connection with many reads in flight (libnbd's
asynchronous API), each read landing straight in a buffer of a fixed pool (no
copies in Python), then written at the same offset. Ranges the server reports
as zeros are never read; reads that come back all-zero are not written as
data. Memory is the pool: ``max_in_flight * request_size``, whatever the disk
size.

How it is safe: the target is flushed before any progress is recorded in the
resume journal, and success is returned only after the final flush. A read
that fails is retried with backoff (a dropped connection is re-opened); one
that keeps failing raises a ReadError naming the extent. A target smaller
than the disk is refused before anything is written.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import mmap
import threading
import time
from dataclasses import asdict, dataclass
from typing import Callable, Deque, Dict, List, NamedTuple, Optional, Tuple

from ansible_collections.xms.warm_migration.plugins.module_utils.copy import nbd_source
from ansible_collections.xms.warm_migration.plugins.module_utils.copy.errors import (
    CopyStopped,
    PlanError,
    ReadError,
    SourceUnreachableError,
    TargetTooSmallError,
    WriteError,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.copy.extents import (
    Extent,
    merge_extents,
    split_extents,
    subtract_extents,
    total_bytes,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.copy.journal import Journal
from ansible_collections.xms.warm_migration.plugins.module_utils.copy.targets import open_target

MiB = 1 << 20


class RateCap:
    """An upper bound on bytes read per second, shared by every copy given it.

    The disks of one sync are copied at once; the operator's ``bandwidth_limit`` bounds what the
    sync takes from the source, not each disk, so they draw on one budget. The clock starts at
    the first read, not at construction (attaching the volumes first must not bank a burst)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.started: Optional[float] = None
        self.submitted = 0
        self.lock = threading.Lock()

    def wait(self, length: int, now: float) -> float:
        """Seconds to wait before reading ``length`` more bytes; 0 or less means go (and it is counted)."""
        with self.lock:
            if self.started is None:
                self.started = now
            wait = (self.submitted + length) / self.limit - (now - self.started)
            if wait <= 0:
                self.submitted += length
            return wait


@dataclass
class CopyOptions:
    """Tuning of one copy. The defaults were measured on this project's benchmark (bench/).

    512 KiB requests, 64 in flight over up to 4 connections: enough to hide
    milliseconds of link latency, 32 MiB of buffers at most, and on par with
    nbdcopy on a local source. Larger requests cost QEMU's NBD servers more, not
    less: serving 2 GiB of a qcow2 image, qemu-storage-daemon (a shipped seed's
    image) spent 2.2-2.4 CPU-s on 1 MiB reads and 0.8 on 512 KiB ones, qemu-nbd
    (which the lab's VDDK reads) 2.6-3.1 against 0.9-1.1; nbdkit the same for both.
    On a conversion host whose cores a wave saturates, CPU per byte is speed.
    """

    request_size: int = 512 << 10
    max_in_flight: int = 64  # reads in flight over all connections
    connections: int = 4  # used only when the server advertises multi-conn
    rate_cap: Optional[RateCap] = None  # bytes/s, shared with the copies running beside this one
    retries: int = 5
    retry_delay: float = 0.2  # first backoff; doubles per attempt
    checkpoint_bytes: int = 1024 * MiB  # journal at least this often...
    checkpoint_seconds: float = 30.0  # ...or this often, whichever comes first


@dataclass
class Progress:
    done: int
    total: int
    rate: float  # bytes/s in this run
    eta_s: Optional[float]


@dataclass
class CopyStats:
    bytes_total: int = 0  # size of the plan
    bytes_read: int = 0  # read from the source
    bytes_written: int = 0  # written to the target as data
    bytes_zeroed: int = 0  # made zero on the target without data (punch / write-zeroes)
    bytes_skipped_zero: int = 0  # zeros left alone because the target says it reads zero there
    resumed_bytes: int = 0  # already done by an interrupted earlier run, not copied again
    extents: int = 0
    requests: int = 0
    retries: int = 0
    started_at: float = 0.0  # when this run began (Unix time): copies on several hosts line up on one clock
    elapsed_s: float = 0.0
    rate: float = 0.0  # bytes of the plan handled per second in this run

    def as_dict(self) -> Dict[str, object]:
        return asdict(self)


ProgressCallback = Callable[[Progress], None]


class _Queued(NamedTuple):
    """A read waiting for a connection: ``attempts`` failed so far; ``alone`` after a shared break."""

    piece: Extent
    attempts: int
    alone: bool


class _Read(NamedTuple):
    """A read in flight: its queue entry's fields, the pool slot and libnbd buffer it lands in."""

    piece: Extent
    attempts: int
    alone: bool
    slot: int
    buffer: object


def _alone(inflight: Dict[int, _Read]) -> bool:
    """Whether the one read in flight is one that must go alone (nothing may join it)."""
    return len(inflight) == 1 and next(iter(inflight.values())).alone


def copy_extents(
    source_uri: str,
    target: str,
    extents: List[Extent],
    *,
    size: Optional[int] = None,
    options: Optional[CopyOptions] = None,
    journal_path: Optional[str] = None,
    progress: Optional[ProgressCallback] = None,
    source_zeros: Optional[List[Extent]] = None,
    stop: Optional[threading.Event] = None,
) -> CopyStats:
    """Copy ``extents`` of the NBD export ``source_uri`` to the same offsets of ``target``.

    ``target`` is a file, a block device or an NBD URI; ``size`` the disk size
    the target must hold (default: the source's size). With ``journal_path``,
    an interrupted copy of the same plan resumes where its last checkpoint
    left off, and a finished one is not repeated. Returns after the target is
    flushed. ``source_zeros`` are parts of the plan the source's own map says
    hold nothing (vSphere's allocated-areas answer): they are made zero on the
    target without being read, like the holes the NBD source reports.
    Setting ``stop`` ends the copy early with CopyStopped.

    A copy that fails or stops journals what it had flushed, so the rerun resumes from
    there rather than from the last periodic checkpoint.
    """
    return _Copy(
        source_uri, target, extents, size, options or CopyOptions(), journal_path, progress, source_zeros, stop
    ).run()


class _Copy:
    def __init__(self, source_uri, target, extents, size, options, journal_path, progress, source_zeros, stop):
        self.source_uri = source_uri
        self.stop = stop
        self.options = options
        self.progress = progress
        self.plan = merge_extents(extents)
        self.source_zeros = merge_extents(source_zeros or [])
        self.stats = CopyStats(bytes_total=total_bytes(self.plan), extents=len(self.plan))
        self.target = None
        self.handle = nbd_source.connect(source_uri, meta_contexts=("base:allocation",))
        self.disk_size = size if size is not None else self.handle.get_size()
        self._check_plan_fits(self.handle.get_size())
        try:
            self.target = open_target(target)
        except Exception:  # re-raised unchanged once the source is closed
            self.close()
            raise
        target_size = self.target.size()
        if target_size < self.disk_size:
            self.close()
            raise TargetTooSmallError(
                f"target {target} holds {target_size} bytes but the disk has {self.disk_size}",
                parameter="target",
                hint="Use a target at least as large as the source disk; nothing was written",
            )
        self.journal = Journal(journal_path, self.plan, self.disk_size) if journal_path else None
        self.done: List[Extent] = []  # handled since the last checkpoint (only kept with a journal)
        self.handled_bytes = 0  # plan bytes handled in this run
        self.pending_bytes = 0  # of those, not yet journaled
        self.started = self.last_checkpoint = time.monotonic()
        self.stats.started_at = time.time()
        self.lock = threading.RLock()  # stats, progress and checkpoints are shared by the workers
        self.last_report = 0.0

    def _check_plan_fits(self, source_size: int) -> None:
        if self.plan and self.plan[-1].end > source_size:
            bad = self.plan[-1]
            self.handle.shutdown()
            raise PlanError(
                f"the plan reaches byte {bad.end} but the source {self.source_uri} has only {source_size}",
                parameter="extents",
                hint="The plan belongs to another disk or snapshot",
            )

    # --- the run -----------------------------------------------------------------------
    def run(self) -> CopyStats:
        try:
            todo = self.plan
            if self.journal:
                self.journal.load()
                if self.journal.complete:
                    self.stats.resumed_bytes = self.stats.bytes_total
                    return self._finish(flush=False)
                todo = subtract_extents(self.plan, self.journal.done)
                self.stats.resumed_bytes = self.stats.bytes_total - total_bytes(todo)
            zeros = (nbd_source.zero_map(self.handle, todo) or []) + subtract_extents(
                todo, subtract_extents(todo, self.source_zeros)
            )
            data = subtract_extents(todo, merge_extents(zeros))
            self._zero(subtract_extents(todo, data))
            self._copy_data(split_extents(data, self.options.request_size))
            return self._finish(flush=True)
        except BaseException:
            self._save_progress()
            raise
        finally:
            self.close()

    def _save_progress(self) -> None:
        """After a failure: flush and journal what was written, so the rerun need not write it again.

        Quiet: the failure being raised matters more, and when the flush itself fails nothing
        new is recorded (only flushed data may be called done)."""
        if not (self.journal and self.done and self.target is not None):
            return
        with contextlib.suppress(Exception):
            self.target.flush()
            self.journal.checkpoint(self.done)
            self.done = []

    def _finish(self, flush: bool) -> CopyStats:
        if flush:
            self._flush_target()
            if self.journal:
                self.journal.checkpoint(self.done, complete=True)
        self.stats.elapsed_s = time.monotonic() - self.started
        handled = self.stats.bytes_total - self.stats.resumed_bytes
        self.stats.rate = handled / self.stats.elapsed_s if self.stats.elapsed_s > 0 else 0.0
        self._report(force=True)
        return self.stats

    def close(self) -> None:
        """Release target and source; quiet, because it also runs after a failure that matters more."""
        if self.target is not None:
            with contextlib.suppress(OSError):
                self.target.close()
            self.target = None
        with contextlib.suppress(nbd_source.nbd.Error):
            self.handle.shutdown()

    # --- zeros -------------------------------------------------------------------------
    def _zero(self, zeros: List[Extent]) -> None:
        for ext in zeros:
            self._check_stop()
            if self.target.reads_zero(ext.offset, ext.length):
                self.stats.bytes_skipped_zero += ext.length
            else:
                self._write(lambda e=ext: self.target.zero(e.offset, e.length), ext)
                self.stats.bytes_zeroed += ext.length
            self._handled(ext)

    # --- data --------------------------------------------------------------------------
    def _copy_data(self, pieces: List[Extent]) -> None:
        """Read and write ``pieces`` with several connections when the server allows it.

        A server that advertises multi-conn serves consistent data on every
        connection, so each worker thread gets its own connection and a share
        of the buffer pool; libnbd and pwrite release the GIL, so they overlap.
        Otherwise (e.g. qemu-nbd serving one client) one connection does it all.
        """
        if not pieces:
            return
        opts = self.options
        workers = opts.connections if self.handle.can_multi_conn() else 1
        workers = max(1, min(workers, len(pieces), opts.max_in_flight))
        self.queue: Deque[_Queued] = collections.deque(_Queued(p, 0, False) for p in pieces)
        self.failure: Optional[BaseException] = None
        handles = [self.handle] + [
            nbd_source.connect(self.source_uri, meta_contexts=("base:allocation",)) for _worker in range(workers - 1)
        ]
        share = max(1, opts.max_in_flight // workers)
        threads = [threading.Thread(target=self._worker, args=(h, share), daemon=True) for h in handles[1:]]
        for thread in threads:
            thread.start()
        self._worker(handles[0], share)
        for thread in threads:
            thread.join()
        for handle in handles[1:]:
            with contextlib.suppress(nbd_source.nbd.Error):
                handle.shutdown()
        if self.failure:
            raise self.failure

    def _worker(self, handle, slots: int) -> None:
        try:
            self._pump(handle, slots)
        except BaseException as err:  # handed to the caller's thread, which raises it
            with self.lock:
                self.failure = self.failure or err

    def _pump(self, handle, slots: int) -> None:
        """One connection's loop: keep up to ``slots`` reads in flight, write each as it lands.

        A read marked ``alone`` (one that was in flight when a connection broke) is sent
        only on an idle connection and nothing joins it, so the next break is charged
        to the one read that caused it (see ``_reconnect``)."""
        size = self.options.request_size
        # Anonymous memory: pages cost nothing until a read lands in them, so a small
        # plan does not pay for the whole pool (a bytearray would be zero-filled up front).
        arena = mmap.mmap(-1, slots * size)
        pool = [memoryview(arena)[i * size : (i + 1) * size] for i in range(slots)]
        free = list(range(slots))
        inflight: Dict[int, _Read] = {}
        completed: List[Tuple[int, int]] = []
        next_tag = 0
        not_before = 0.0  # after a failure or under the bandwidth cap: no new reads before this time
        while not self.failure:
            self._check_stop()
            now = time.monotonic()
            draining = False  # the next read must go alone: wait for the ones in flight
            while free and now >= not_before and not _alone(inflight):
                try:
                    queued = self.queue.popleft()
                except IndexError:
                    break
                if queued.alone and inflight:
                    self.queue.appendleft(queued)
                    draining = True
                    break
                wait = self._throttle(queued.piece.length, now)
                if wait > 0:
                    self.queue.appendleft(queued)
                    not_before = now + wait
                    break
                slot = free.pop()
                buffer = nbd_source.nbd.Buffer.from_buffer(pool[slot][: queued.piece.length])
                tag, next_tag = next_tag, next_tag + 1
                try:
                    handle.aio_pread(
                        buffer,
                        queued.piece.offset,
                        completion=lambda err, tag=tag: completed.append((tag, err.value)) or 1,
                    )
                except nbd_source.nbd.Error:
                    free.append(slot)
                    self.queue.appendleft(queued)
                    handle = self._reconnect(handle, inflight, free, queued.piece)
                    break
                inflight[tag] = _Read(queued.piece, queued.attempts, queued.alone, slot, buffer)
                with self.lock:
                    self.stats.requests += 1
            if not inflight:
                if not self.queue:
                    return
                time.sleep(max(0.001, not_before - time.monotonic()))
                continue
            waiting = draining or not self.queue or not free or _alone(inflight)
            timeout = -1 if waiting else max(1, int((not_before - time.monotonic()) * 1000))
            try:
                handle.poll(timeout)
            except nbd_source.nbd.Error:
                handle = self._reconnect(handle, inflight, free, None)
                continue
            for tag, err in completed:
                read = inflight.pop(tag, None)
                if read is None:  # a command of a connection that broke: already requeued by _reconnect
                    continue
                free.append(read.slot)
                if err:
                    not_before = self._retry(read, errno.errorcode.get(err, str(err)))
                    continue
                self._land(read.piece, read.buffer, pool[read.slot][: read.piece.length])
            completed.clear()

    def _check_stop(self) -> None:
        if self.stop is not None and self.stop.is_set():
            raise CopyStopped("the copy was stopped", hint="Run again: it resumes from what was flushed")

    def _land(self, piece: Extent, buffer, view) -> None:
        """Write one read to the target: as data, or as zeros when it read all zero."""
        if buffer.is_zero():
            if self.target.reads_zero(piece.offset, piece.length):
                kind = "bytes_skipped_zero"
            else:
                self._write(lambda: self.target.zero(piece.offset, piece.length), piece)
                kind = "bytes_zeroed"
        else:
            self._write(lambda: self.target.write(view, piece.offset), piece)
            kind = "bytes_written"
        with self.lock:
            self.stats.bytes_read += piece.length
            setattr(self.stats, kind, getattr(self.stats, kind) + piece.length)
            self._handled(piece)

    def _throttle(self, length: int, now: float) -> float:
        """Seconds to wait before reading ``length`` more bytes so the average rate stays under the cap."""
        cap = self.options.rate_cap
        return cap.wait(length, now) if cap else 0.0

    def _retry(self, read: _Read, cause: str) -> float:
        """Queue a failed read again after a backoff, or give up on it with a ReadError."""
        attempts = self._charge(read, cause)
        self.queue.appendleft(_Queued(read.piece, attempts, read.alone))
        return time.monotonic() + self.options.retry_delay * (2 ** (attempts - 1))

    def _charge(self, read: _Read, cause: str) -> int:
        """Count one failed attempt of ``read``; past the retry limit, a ReadError naming it."""
        attempts = read.attempts + 1
        with self.lock:
            self.stats.retries += 1
        if attempts > self.options.retries:
            raise ReadError(
                read.piece,
                cause,
                attempts=attempts,
                hint="The source keeps failing there; check the source storage and run again (it resumes)",
            )
        return attempts

    def _reconnect(self, handle, inflight: Dict[int, _Read], free: List[int], failed_piece: Optional[Extent]):
        """The connection broke: requeue what was in flight on it and return a new connection.

        A break is charged as a failed attempt only when one read was in flight: with
        several, any of them may be the cause, and charging them all would let an innocent
        neighbour reach the retry limit first and be named. So the reads a shared break cut
        are sent again one at a time (``alone``), and a source that drops the connection
        whenever one offset is read ends, after the retry limit, in a ReadError naming that
        offset, not in an endless loop of reconnects."""
        lost = sorted(inflight.values(), key=lambda read: read.piece.offset)
        free.extend(read.slot for read in lost)
        inflight.clear()
        with contextlib.suppress(nbd_source.nbd.Error):
            handle.shutdown()
        if len(lost) == 1:
            attempts = self._charge(lost[0], "the source dropped the connection while it was being read")
            self.queue.appendleft(_Queued(lost[0].piece, attempts, True))
        else:
            self.queue.extendleft(_Queued(read.piece, read.attempts, True) for read in reversed(lost))
        last: Optional[Exception] = None
        for attempt in range(self.options.retries):
            time.sleep(self.options.retry_delay * (2**attempt))
            with self.lock:
                self.stats.retries += 1
            try:
                return nbd_source.connect(self.source_uri, meta_contexts=("base:allocation",))
            except SourceUnreachableError as err:
                last = err
        piece = failed_piece or (self.queue[0].piece if self.queue else Extent(0, 0))
        raise ReadError(
            piece,
            f"the connection to the source broke and could not be re-opened: {last}",
            attempts=self.options.retries,
        )

    def _write(self, action: Callable[[], None], piece: Extent) -> None:
        """Run one target write, retrying a transient failure; a full target fails at once."""
        for attempt in range(self.options.retries + 1):
            try:
                action()
                return
            except OSError as err:
                if err.errno == errno.ENOSPC or attempt == self.options.retries:
                    hint = "The target is full" if err.errno == errno.ENOSPC else "Check the target storage"
                    raise WriteError(piece, err.strerror or str(err), attempts=attempt + 1, hint=hint) from None
                with self.lock:
                    self.stats.retries += 1
                time.sleep(self.options.retry_delay * (2**attempt))

    # --- progress and checkpoints --------------------------------------------------------
    def _handled(self, piece: Extent) -> None:
        self.handled_bytes += piece.length
        if self.journal:
            self.done.append(piece)
            self.pending_bytes += piece.length
            self._maybe_checkpoint()
        self._report()

    def _maybe_checkpoint(self) -> None:
        age = time.monotonic() - self.last_checkpoint
        if self.pending_bytes >= self.options.checkpoint_bytes or age >= self.options.checkpoint_seconds:
            self._flush_target()  # only what is flushed may be called done
            self.journal.checkpoint(self.done)
            self.done, self.pending_bytes = [], 0
            self.last_checkpoint = time.monotonic()

    def _flush_target(self) -> None:
        try:
            self.target.flush()
        except OSError as err:
            raise WriteError(
                Extent(0, self.disk_size),
                f"flush failed: {err.strerror or err}",
                hint="Nothing after the last checkpoint is recorded as done; run again",
            ) from None

    def _report(self, force: bool = False) -> None:
        if not self.progress:
            return
        now = time.monotonic()
        if not force and now - self.last_report < 0.5:
            return
        self.last_report = now
        done = self.stats.resumed_bytes + self.handled_bytes
        rate = self.handled_bytes / max(now - self.started, 1e-9)
        left = self.stats.bytes_total - done
        self.progress(
            Progress(done=done, total=self.stats.bytes_total, rate=rate, eta_s=left / rate if rate > 0 else None)
        )
