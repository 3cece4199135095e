"""Extents: the unit of every copy plan.

A plan is a list of byte ranges of the source disk to copy to the same offsets
on the target. vSphere's changed-areas query, NBD ``base:allocation`` and QEMU
dirty bitmaps all answer in ranges; these helpers normalise them (sorted,
non-overlapping, adjacent ones joined) and cut them into request-sized pieces.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, List


@dataclass(frozen=True, order=True)
class Extent:
    """``length`` bytes starting at byte ``offset`` of a disk."""

    offset: int
    length: int

    @property
    def end(self) -> int:
        return self.offset + self.length


def merge_extents(extents: Iterable[Extent]) -> List[Extent]:
    """Sorted, with overlapping and touching extents joined and empty ones dropped."""
    merged: List[Extent] = []
    for ext in sorted(e for e in extents if e.length > 0):
        if merged and ext.offset <= merged[-1].end:
            last = merged[-1]
            merged[-1] = Extent(last.offset, max(last.end, ext.end) - last.offset)
        else:
            merged.append(ext)
    return merged


def split_extents(extents: Iterable[Extent], max_length: int) -> List[Extent]:
    """Each extent cut into pieces of at most ``max_length`` bytes, in order."""
    pieces: List[Extent] = []
    for ext in extents:
        offset = ext.offset
        while offset < ext.end:
            length = min(max_length, ext.end - offset)
            pieces.append(Extent(offset, length))
            offset += length
    return pieces


def subtract_extents(extents: Iterable[Extent], removed: Iterable[Extent]) -> List[Extent]:
    """The parts of ``extents`` not covered by ``removed`` (both merged first)."""
    result: List[Extent] = []
    cuts = merge_extents(removed)
    i = 0
    for ext in merge_extents(extents):
        start = ext.offset
        while i < len(cuts) and cuts[i].end <= start:
            i += 1
        j = i
        while j < len(cuts) and cuts[j].offset < ext.end:
            if cuts[j].offset > start:
                result.append(Extent(start, cuts[j].offset - start))
            start = max(start, cuts[j].end)
            j += 1
        if start < ext.end:
            result.append(Extent(start, ext.end - start))
    return result


def total_bytes(extents: Iterable[Extent]) -> int:
    return sum(e.length for e in extents)
