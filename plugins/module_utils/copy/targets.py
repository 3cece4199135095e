"""Where copied bytes go: a regular file, a block device, or an NBD export.

Zeros are not written as data when the target can do better: a file or block
device gets its range deallocated (``fallocate`` punch-hole, which reads back
as zeros; zero-range where punching is not supported), an NBD export gets a
write-zeroes command. ``flush`` makes everything written durable; the engine
calls it before it records any progress.

Zeros are not written at all where the target itself says the range reads as
zero (``reads_zero``): a hole of a sparse file, an NBD extent flagged zero
(QEMU says so for unallocated qcow2 clusters, never below a LUKS layer). A
fresh volume is never assumed to be zero: a block device, an encrypted volume
or a back-end that does not zero new volumes would keep whatever it held.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import ctypes.util
import errno
import os
import stat
import threading
from typing import Deque, Tuple

from ansible_collections.xms.warm_migration.plugins.module_utils.copy import nbd_source
from ansible_collections.xms.warm_migration.plugins.module_utils.copy.errors import TargetError

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10
ZERO_CHUNK = bytes(1 << 20)

SYNC_FILE_RANGE_WAIT_BEFORE = 0x01
SYNC_FILE_RANGE_WRITE = 0x02
SYNC_FILE_RANGE_WAIT_AFTER = 0x04
# Written data stays in the page cache until this many bytes were written after it (see FileTarget.write).
CACHE_WINDOW = 16 << 20

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
_libc.sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]


def _fallocate(fd: int, mode: int, offset: int, length: int) -> bool:
    """True when the kernel did it; False when this file system or device cannot."""
    if _libc.fallocate(fd, mode, offset, length) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL, errno.ENODEV):
        return False
    raise OSError(err, os.strerror(err))


class FileTarget:
    """A regular file or a block device, written with pwrite."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self.fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as err:
            raise TargetError(
                f"cannot open target {path}: {err.strerror}",
                parameter="target",
                hint="Check the path and that this user may write it",
            ) from None
        self.is_block = stat.S_ISBLK(os.fstat(self.fd).st_mode)
        self._cached: Deque[Tuple[int, int]] = collections.deque()  # written, not yet dropped from the cache
        self._cached_bytes = 0
        self._cached_lock = threading.Lock()  # the copy's connections write from their own threads
        self._zero_modes = [FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE]

    def size(self) -> int:
        return os.lseek(self.fd, 0, os.SEEK_END)

    def reads_zero(self, offset: int, length: int) -> bool:
        """True when ``[offset, offset+length)`` is a hole of a regular file; a device cannot say."""
        if self.is_block:
            return False
        try:
            return os.lseek(self.fd, offset, os.SEEK_DATA) >= offset + length
        except OSError as err:
            return err.errno == errno.ENXIO  # no data from offset to the end of the file

    def write(self, data, offset: int) -> None:
        """pwrite, then keep the page cache out of the way, as nbdcopy does: writeback of this range
        starts at once, and a range written ``CACHE_WINDOW`` bytes ago is waited for and dropped.

        A disk copied through the page cache would otherwise fill it with gigabytes nobody reads
        again, and every new page costs: on the lab's two cores eight copies at once spent half
        their time copying into fresh page-cache pages (bench/README.md)."""
        view = memoryview(data)
        start, length = offset, len(view)
        while view:
            written = os.pwrite(self.fd, view, offset)
            view, offset = view[written:], offset + written
        _libc.sync_file_range(self.fd, start, length, SYNC_FILE_RANGE_WRITE)
        old = []
        with self._cached_lock:
            self._cached.append((start, length))
            self._cached_bytes += length
            while self._cached_bytes > CACHE_WINDOW:
                old.append(self._cached.popleft())
                self._cached_bytes -= old[-1][1]
        for old_start, old_length in old:
            wait = SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER
            if _libc.sync_file_range(self.fd, old_start, old_length, wait) != 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err))
            os.posix_fadvise(self.fd, old_start, old_length, os.POSIX_FADV_DONTNEED)

    def zero(self, offset: int, length: int) -> None:
        # Copy threads share this target: each works on its own snapshot of the modes, and a mode the
        # file system refuses is dropped by value (another thread may have dropped it already).
        for mode in list(self._zero_modes):
            if _fallocate(self.fd, mode, offset, length):
                return
            with contextlib.suppress(ValueError):
                self._zero_modes.remove(mode)  # not supported here: do not ask again
        end = offset + length
        while offset < end:
            chunk = min(len(ZERO_CHUNK), end - offset)
            self.write(memoryview(ZERO_CHUNK)[:chunk], offset)
            offset += chunk

    def flush(self) -> None:
        os.fsync(self.fd)

    def close(self) -> None:
        os.close(self.fd)


class NbdTarget:
    """An NBD export, written with pwrite and write-zeroes commands."""

    def __init__(self, uri: str) -> None:
        self.handle = nbd_source.connect(uri, meta_contexts=("base:allocation",), parameter="target", name="xms-target")
        if self.handle.is_read_only():
            self.handle.shutdown()
            raise TargetError(f"the NBD export {uri} is read-only", parameter="target")
        self.can_zero = self.handle.can_zero()

    def size(self) -> int:
        return self.handle.get_size()

    def reads_zero(self, offset: int, length: int) -> bool:
        """True when the server flags the whole range as reading zeros."""
        if not self.handle.can_meta_context("base:allocation"):
            return False
        status = nbd_source.block_status(self.handle, "base:allocation", offset, offset + length)
        return all(flags & nbd_source.STATE_ZERO for _pos, _length, flags in status)

    def write(self, data, offset: int) -> None:
        self.handle.pwrite(bytes(data) if not isinstance(data, (bytes, bytearray)) else data, offset)

    def zero(self, offset: int, length: int) -> None:
        if self.can_zero:
            while length > 0:
                chunk = min(length, nbd_source.STATUS_WINDOW)
                self.handle.zero(chunk, offset)
                offset, length = offset + chunk, length - chunk
            return
        end = offset + length
        while offset < end:
            chunk = min(len(ZERO_CHUNK), end - offset)
            self.handle.pwrite(ZERO_CHUNK[:chunk], offset)
            offset += chunk

    def flush(self) -> None:
        if self.handle.can_flush():
            self.handle.flush()

    def close(self) -> None:
        self.handle.shutdown()


def open_target(target: str):
    """A target object for a path or an NBD URI."""
    if nbd_source.is_nbd_uri(target):
        return NbdTarget(target)
    return FileTarget(target)


def zero_beyond(target: str, offset: int) -> int:
    """Make ``target`` read zero from ``offset`` to its end; returns the bytes zeroed.

    A volume is sized in whole GiB, so it may end after its source disk: that tail is never
    copied into, and a reused volume or a back-end that does not zero new ones (a block device)
    would show the guest old or foreign bytes there."""
    opened = open_target(target)
    try:
        size = opened.size()
        if size <= offset:
            return 0
        opened.zero(offset, size - offset)
        opened.flush()
        return size - offset
    finally:
        opened.close()
