"""Calls that need not wait for each other, made at once: one per disk of a VM.

A sync asks vSphere and Cinder a round trip or more per disk while its snapshot lives; one
after the other, a VM's disks add their round trips up, and under a wave's load each takes
longer. Side by side, the slowest one counts.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, List, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")

# At most this many calls at once: a VM may have dozens of disks, and each call holds a connection
# to vCenter or Cinder.
AT_ONCE = 8


def side_by_side(call: Callable[[T], R], items: Sequence[T]) -> List[R]:
    """``call(item)`` for every item, at once; the results in the items' order.

    Every call runs to its end before the first failure (in the items' order) is raised: nothing
    started here is still running when the caller handles the error."""
    if len(items) <= 1:
        return [call(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(AT_ONCE, len(items)), thread_name_prefix="xms-side") as pool:
        futures = [pool.submit(call, item) for item in items]
    return [future.result() for future in futures]
