"""The resume journal: which parts of a plan are durably on the target.

One file per plan. Its header (the plan's key, the disk size and the plan itself) is written
once, at the first checkpoint, by atomic replace (temporary file, fsync, rename, fsync of the
directory). Each checkpoint then appends one record holding only what was flushed since the
previous one, framed by its length and a CRC-32 and made durable with fdatasync before the copy
goes on. A checkpoint so costs what it records, not what the plan holds: a fragmented thin
disk's plan of a million extents is written once, where rewriting it at every checkpoint made
each one slower than the last.

Written only after the target was flushed. After a crash the file ends in whole records and
perhaps one torn one; reading stops at the first record whose frame does not check, so the
journal never claims more than was on the target. ``load`` cuts a torn tail away before
anything is appended again.

A journal belongs to one plan: its key is a digest of the plan's extents and the disk size. A
journal found with another key is ignored (and replaced), so progress of one plan is never
applied to another.
"""

from __future__ import annotations

import hashlib
import os
import struct
import sys
import zlib
from array import array
from dataclasses import dataclass
from itertools import chain
from typing import List, Optional

from ansible_collections.xms.warm_migration.plugins.module_utils.copy.extents import (
    Extent,
    merge_extents,
    subtract_extents,
)

MAGIC = b"XMSJRNL2"
_HEAD = struct.Struct("<Q32sQ")  # disk size, plan key, number of extents in the plan
_RECORD = struct.Struct("<IB")  # number of extents, flags
_CRC = struct.Struct("<I")
_COMPLETE = 1


def _pack(extents: List[Extent]) -> bytes:
    """Extents as little-endian (offset, length) pairs of 64-bit integers."""
    packed = array("Q", chain.from_iterable((e.offset, e.length) for e in extents))
    if sys.byteorder == "big":
        packed.byteswap()
    return packed.tobytes()


def _unpack(data: bytes) -> List[Extent]:
    packed = array("Q")
    packed.frombytes(data)
    if sys.byteorder == "big":
        packed.byteswap()
    return [Extent(packed[i], packed[i + 1]) for i in range(0, len(packed), 2)]


def plan_key(packed_plan: bytes, size: int) -> bytes:
    return hashlib.sha256(MAGIC + size.to_bytes(8, "little") + packed_plan).digest()


@dataclass
class Recorded:
    """What a readable journal file says, and where its last whole record ends."""

    size: int
    key: bytes
    plan: List[Extent]
    done: List[Extent]
    complete: bool
    length: int


class Journal:
    """Progress of one plan, kept in ``path``."""

    def __init__(self, path: str, extents: List[Extent], size: int) -> None:
        self.path = path
        self.size = size
        self._plan = _pack(extents)
        self.key = plan_key(self._plan, size)
        self.done: List[Extent] = []
        self.complete = False
        self._started = False  # the file holds this plan's header: checkpoints append

    def load(self) -> None:
        """Take over the progress recorded for this very plan, if any."""
        contents = read_journal(self.path)
        if contents is None or contents.key != self.key:
            return
        self.done, self.complete, self._started, self._plan = contents.done, contents.complete, True, b""
        if os.path.getsize(self.path) > contents.length:  # a torn record: cut it before appending
            with open(self.path, "r+b") as handle:
                handle.truncate(contents.length)
                os.fsync(handle.fileno())

    def checkpoint(self, flushed: List[Extent], complete: bool = False) -> None:
        """Record ``flushed`` (already flushed to the target!) durably: what was done since the last call."""
        body = _pack(merge_extents(flushed))
        frame = _RECORD.pack(len(body) // 16, _COMPLETE if complete else 0) + body
        record = frame + _CRC.pack(zlib.crc32(frame))
        if self._started:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
            try:
                _write_all(fd, record)
                os.fdatasync(fd)
            finally:
                os.close(fd)
        else:
            header = MAGIC + _HEAD.pack(self.size, self.key, len(self._plan) // 16) + self._plan
            _atomic_write(self.path, header + _CRC.pack(zlib.crc32(header)) + record)
            self._started, self._plan = True, b""  # in the file now: 16 MB for a million extents, not kept twice
        self.complete = complete


def remaining_extents(path: str) -> Optional[List[Extent]]:
    """What the plan recorded in ``path`` had not flushed yet; None when there is no readable journal."""
    contents = read_journal(path)
    if contents is None:
        return None
    return [] if contents.complete else subtract_extents(contents.plan, contents.done)


def read_journal(path: str) -> Optional[Recorded]:
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    start = len(MAGIC) + _HEAD.size
    if data[: len(MAGIC)] != MAGIC or len(data) < start:
        return None
    size, key, count = _HEAD.unpack_from(data, len(MAGIC))
    end = start + count * 16
    if len(data) < end + _CRC.size or _CRC.unpack_from(data, end)[0] != zlib.crc32(data[:end]):
        return None
    contents = Recorded(size, key, _unpack(data[start:end]), [], False, end + _CRC.size)
    while contents.length + _RECORD.size <= len(data):
        at = contents.length
        count, flags = _RECORD.unpack_from(data, at)
        end = at + _RECORD.size + count * 16
        if len(data) < end + _CRC.size or _CRC.unpack_from(data, end)[0] != zlib.crc32(data[at:end]):
            break  # torn by a crash while it was appended: it was never acknowledged
        contents.done += _unpack(data[at + _RECORD.size : end])
        contents.complete = contents.complete or bool(flags & _COMPLETE)
        contents.length = end + _CRC.size
    contents.done = merge_extents(contents.done)
    return contents


def _atomic_write(path: str, content: bytes) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        _write_all(fd, content)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _write_all(fd: int, content: bytes) -> None:
    view = memoryview(content)
    while view:
        view = view[os.write(fd, view) :]
