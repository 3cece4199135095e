"""The resume journal: which parts of a plan are durably on the target.

Written only after the target was flushed, and always by atomic replace (write
a temporary file, fsync it, rename it over the old one, fsync the directory),
so after a crash the journal on disk is either the previous checkpoint or the
new one, and never claims more than what is on the target.

A journal belongs to one plan: its key is a digest of the plan's extents and
the disk size. A journal found with another key is ignored (and replaced),
so progress of one plan is never applied to another.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import List, Optional

from ansible_collections.xms.warm_migration.plugins.module_utils.copy.extents import (
    Extent,
    merge_extents,
    subtract_extents,
)

VERSION = 1


def plan_key(extents: List[Extent], size: int) -> str:
    digest = hashlib.sha256(f"v{VERSION}:{size}:".encode())
    for ext in extents:
        digest.update(f"{ext.offset}+{ext.length},".encode())
    return digest.hexdigest()


class Journal:
    """Progress of one plan, kept in ``path``."""

    def __init__(self, path: str, extents: List[Extent], size: int) -> None:
        self.path = path
        self.extents = extents
        self.size = size
        self.key = plan_key(extents, size)
        self.done: List[Extent] = []
        self.complete = False

    def load(self) -> None:
        """Take over the progress recorded for this very plan, if any."""
        data = _read(self.path)
        if data and data.get("key") == self.key:
            self.done = [Extent(o, n) for o, n in data.get("done", [])]
            self.complete = bool(data.get("complete"))

    def checkpoint(self, done: List[Extent], complete: bool = False) -> None:
        """Record ``done`` (already flushed to the target!) durably."""
        self.done = merge_extents(done)
        self.complete = complete
        payload = {
            "version": VERSION,
            "key": self.key,
            "size": self.size,
            "complete": complete,
            "extents": [[e.offset, e.length] for e in self.extents],
            "done": [[e.offset, e.length] for e in self.done],
        }
        _atomic_write(self.path, json.dumps(payload, separators=(",", ":")).encode())


def remaining_extents(path: str) -> Optional[List[Extent]]:
    """What the plan recorded in ``path`` had not flushed yet; None when there is no readable journal."""
    data = _read(path)
    if not data:
        return None
    if data.get("complete"):
        return []
    plan = [Extent(o, n) for o, n in data.get("extents", [])]
    return subtract_extents(plan, [Extent(o, n) for o, n in data.get("done", [])])


def _read(path: str) -> Optional[dict]:
    try:
        with open(path, "rb") as handle:
            data = json.loads(handle.read())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("version") == VERSION else None


def _atomic_write(path: str, content: bytes) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, content)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
