"""Verification: read back both sides of every copied extent and compare digests.

Done per chunk with SHA-256, so a mismatch is located (to the chunk) and
reported by extent, and memory stays at one chunk per side.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import List

from ansible_collections.xms.warm_migration.plugins.module_utils.copy import nbd_source
from ansible_collections.xms.warm_migration.plugins.module_utils.copy.errors import VerifyError
from ansible_collections.xms.warm_migration.plugins.module_utils.copy.extents import (
    Extent,
    merge_extents,
    split_extents,
)

CHUNK = 4 << 20


@dataclass
class VerifyResult:
    bytes_compared: int = 0
    mismatches: List[Extent] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def raise_for_mismatch(self) -> None:
        if self.mismatches:
            raise VerifyError(self.mismatches, self.mismatches[0])


def verify_extents(source_uri: str, target: str, extents: List[Extent]) -> VerifyResult:
    """Compare ``extents`` of the NBD source and the target (path or NBD URI)."""
    result = VerifyResult()
    source = nbd_source.connect(source_uri)
    read_target, close_target = _reader(target)
    try:
        for piece in split_extents(merge_extents(extents), CHUNK):
            want = hashlib.sha256(source.pread(piece.length, piece.offset)).digest()
            got = hashlib.sha256(read_target(piece.length, piece.offset)).digest()
            result.bytes_compared += piece.length
            if want != got:
                result.mismatches.append(piece)
    finally:
        source.shutdown()
        close_target()
    result.mismatches = merge_extents(result.mismatches)
    return result


def digest_extents(target: str, extents: List[Extent], prefix: bytes = b"") -> str:
    """SHA-256 of ``prefix`` and then the bytes of ``extents`` of ``target`` (path or NBD URI), in offset order."""
    digest = hashlib.sha256(prefix)
    read, close = _reader(target)
    try:
        for piece in split_extents(merge_extents(extents), CHUNK):
            digest.update(read(piece.length, piece.offset))
    finally:
        close()
    return digest.hexdigest()


def _reader(target: str):
    if nbd_source.is_nbd_uri(target):
        handle = nbd_source.connect(target, parameter="target")
        return handle.pread, handle.shutdown
    fd = os.open(target, os.O_RDONLY | os.O_CLOEXEC)
    return (lambda length, offset: os.pread(fd, length, offset)), (lambda: os.close(fd))
