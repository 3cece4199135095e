"""How long a cutover would keep the VM down, projected from the syncs a migration has run.

The downtime is the final delta plus the conversion plus the instance step. The final delta is
what the guest changes between the last sync's snapshot and the shutdown, copied at the rate the
syncs reached plus a sync's fixed cost (snapshot, attach, flush). Both come from the record's
sync history: the change rate from consecutive incrementals (bytes they copied over the time
between their snapshots: what CBT reported changed), the copy rate and fixed cost from how long
syncs of different sizes took. Conversion and instance times are what this conversion host
measured last (defaults until it has measured any).

Changed bytes do not grow without end: a block written twice is copied once, so a disk's delta
saturates at its capacity. Each disk's delta is projected as if its writes fell uniformly over
it, ``C * (1 - exp(-w * t / C))`` for capacity C and write rate w (solved from what its
incrementals copied): linear while a cadence's writes are a small part of the disk, and never
above the disk. Writes that keep to a working set saturate sooner (the projection says more than
is copied); writes only to new blocks (an appending log) grow linearly until the disk is full
(it says less). Both differences vanish on disks much larger than a cadence's writes.

A cutover with a downtime budget syncs back to back while the source runs until the projection
fits, as QEMU's live migration iterates while the dirty set shrinks; if the final delta stops
shrinking, the guest writes faster than the copy can catch up, and the cutover stops before the
shutdown.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import statistics
import threading
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Dict, List, Optional, Tuple

HISTORY = 6  # syncs kept in the record, as many of them as fit VALUE_LIMIT
VALUE_LIMIT = 255  # characters of one record value: what Cinder stores in one metadata value
DEFAULT_CONVERSION_S = 300.0  # until this host has converted a guest: virt-v2v's usual minutes
DEFAULT_INSTANCE_S = 30.0
SHUTDOWN_S = 30.0  # the guest's own shutdown: its writes until then are in the final delta
KINDS = {"seed": "s", "incremental": "i", "full_resync": "f", "resume": "r"}
MEASURED = ("shutdown_s", "conversion_s", "instance_s")  # what a conversion host measures at each cutover
KEPT_TIMES = 3  # cutovers a conversion host remembers of each measure


@dataclass(frozen=True)
class SyncSample:
    """One finished sync: its snapshot's time, its kind, the bytes it copied, how long it took in all
    and how long of that the copy engine ran (the rest is the sync's fixed cost: snapshot, attach, flush)."""

    snapshot_at: datetime
    kind: str
    bytes: int
    duration_s: float
    copy_s: float


def epoch(when: datetime) -> int:
    """A sync's snapshot time as the record keys it: whole seconds since 1970."""
    return int(when.timestamp())


def format_history(samples: List[SyncSample]) -> str:
    """``epoch:kind:bytes:ms:copy_ms;...``, the newest last: at most HISTORY of them, and only as many of
    the newest as fit a record value (VALUE_LIMIT characters): a multi-TB seed and hour-long syncs take
    over 40 characters a sample, and then the oldest ones are left out (the projection uses the newest)."""
    items = [
        f"{epoch(s.snapshot_at)}:{KINDS.get(s.kind, 'i')}:{s.bytes}:{int(s.duration_s * 1000)}:{int(s.copy_s * 1000)}"
        for s in samples[-HISTORY:]
    ]
    while len(";".join(items)) > VALUE_LIMIT:
        items.pop(0)
    return ";".join(items)


def parse_history(text: str) -> List[SyncSample]:
    names = {v: k for k, v in KINDS.items()}
    samples = []
    for item in filter(None, text.split(";")):
        try:
            epoch, kind, size, millis, copy_millis = item.split(":")
            when = datetime.fromtimestamp(int(epoch), tz=timezone.utc)
            samples.append(
                SyncSample(when, names.get(kind, "incremental"), int(size), int(millis) / 1000, int(copy_millis) / 1000)
            )
        except (ValueError, OverflowError, OSError):  # OverflowError, OSError: an epoch no datetime holds
            continue  # a hand-edited entry: the others still count
    return samples


def format_copied(copied: Dict[int, int]) -> str:
    """A disk's bytes per sync, ``epoch:bytes;...`` by the epoch of the sync's snapshot: the newest HISTORY."""
    return ";".join(f"{epoch}:{size}" for epoch, size in sorted(copied.items())[-HISTORY:])


def parse_copied(text: str) -> Dict[int, int]:
    out = {}
    for item in filter(None, text.split(";")):
        epoch, _colon, size = item.partition(":")
        if epoch.isdigit() and size.isdigit():
            out[int(epoch)] = int(size)  # a hand-edited entry is skipped: the others still count
    return out


@dataclass(frozen=True)
class DiskChanges:
    """What the projection knows of one disk: its capacity and the bytes each sync copied of it, by the epoch
    of the sync's snapshot (record.DiskState keeps them)."""

    capacity: int
    copied: Dict[int, int]


def write_rate(changed: int, interval_s: float, capacity: int) -> float:
    """The write rate (bytes/s) under which uniform writes change ``changed`` of ``capacity`` bytes in
    ``interval_s``; the change rate itself when the capacity is unknown (0). A disk changed whole gives
    a rate that fills it in a few intervals: the projection then says the whole disk."""
    if capacity <= 0:
        return changed / interval_s
    share = min(changed / capacity, 1 - 1e-6)
    return -capacity * math.log1p(-share) / interval_s


def changed_after(rate: float, seconds: float, capacity: int) -> float:
    """Bytes of ``capacity`` changed after ``seconds`` of uniform writes at ``rate``: write_rate's inverse."""
    if capacity <= 0:
        return rate * seconds
    return -capacity * math.expm1(-rate * seconds / capacity)


@dataclass
class Projection:
    change_rate: float  # bytes/s the guest writes (its disks' write rates)
    copy_rate: float  # bytes/s a sync copies
    sync_fixed_s: float  # a sync's cost beyond its bytes
    final_delta_bytes: int
    final_sync_s: float
    conversion_s: float
    conversion_measured: bool
    instance_s: float
    downtime_s: float

    def as_dict(self) -> Dict[str, object]:
        return {k: (round(v, 1) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def rates(samples: List[SyncSample]) -> Optional[tuple]:
    """(copy rate, fixed cost) from the history, or None before it can say.

    Copy rate: the newest sync that copied anything, bytes over its engine time (a bandwidth limit
    or a slower link shows at once). Fixed cost: the mean over the last three syncs of their time
    outside the engine.
    """
    copied = [s for s in samples if s.bytes > 0 and s.copy_s > 0]
    if not copied:
        return None
    copy_rate = copied[-1].bytes / copied[-1].copy_s
    overheads = [max(0.0, s.duration_s - s.copy_s) for s in samples[-3:]]
    return max(copy_rate, 1.0), sum(overheads) / len(overheads)


def write_rates(samples: List[SyncSample], disks: List[DiskChanges]) -> List[Tuple[int, float]]:
    """(capacity, write rate) of each disk, each rate the mean over the last three incrementals; [] before
    an incremental. A history whose disks did not record their own bytes (a record older than them)
    projects the VM as one disk of their summed capacity."""
    pairs = [(prev, cur) for prev, cur in zip(samples, samples[1:]) if cur.kind == "incremental"][-3:]
    if not pairs:
        return []
    epochs = [epoch(cur.snapshot_at) for _prev, cur in pairs]
    intervals = [max(1.0, (cur.snapshot_at - prev.snapshot_at).total_seconds()) for prev, cur in pairs]
    if disks and all(when in disk.copied for disk in disks for when in epochs):
        pools = [(disk.capacity, [disk.copied[when] for when in epochs]) for disk in disks]
    else:
        pools = [(sum(disk.capacity for disk in disks), [cur.bytes for _prev, cur in pairs])]
    return [
        (capacity, statistics.fmean(write_rate(b, t, capacity) for b, t in zip(changed, intervals)))
        for capacity, changed in pools
    ]


def project(
    samples: List[SyncSample],
    disks: List[DiskChanges],
    *,
    since_snapshot_s: float,
    conversion_s: Optional[float],
    instance_s: Optional[float],
    convert: bool = True,
) -> Optional[Projection]:
    """The downtime of a cutover whose shutdown ends ``since_snapshot_s`` after the last sync's snapshot."""
    found, disk_rates = rates(samples), write_rates(samples, disks)
    if found is None or not disk_rates:
        return None
    copy_rate, fixed = found
    change_rate = sum(rate for _capacity, rate in disk_rates)
    delta = int(sum(changed_after(rate, since_snapshot_s, capacity) for capacity, rate in disk_rates))
    final_sync_s = fixed + delta / copy_rate
    conversion = (conversion_s if conversion_s is not None else DEFAULT_CONVERSION_S) if convert else 0.0
    instance = instance_s if instance_s is not None else DEFAULT_INSTANCE_S
    return Projection(
        change_rate=change_rate,
        copy_rate=copy_rate,
        sync_fixed_s=fixed,
        final_delta_bytes=delta,
        final_sync_s=final_sync_s,
        conversion_s=conversion,
        conversion_measured=conversion_s is not None or not convert,
        instance_s=instance,
        downtime_s=final_sync_s + conversion + instance,
    )


class HostTimes:
    """What this conversion host measured at its last cutovers: shutdown, conversion, instance step.

    Kept in ``<state_dir>/measured.json``, the last KEPT_TIMES of each; an estimate is their
    median, so one slow or quick cutover (a busy API, a guest that took its time) does not swing
    the next projections. Each sync copies the estimates into the record, so that migration_info
    (which runs anywhere) can project with them."""

    def __init__(self, state_dir: str) -> None:
        self.path = os.path.join(state_dir, "measured.json")

    def _kept(self) -> Dict[str, List[float]]:
        try:
            with open(self.path) as handle:
                data = json.load(handle)
            kept = {k: v if isinstance(v, list) else [v] for k, v in data.items() if k in MEASURED}
            return {k: [float(x) for x in v if math.isfinite(float(x))] for k, v in kept.items()}
        except (OSError, ValueError, AttributeError, TypeError):
            return {}

    def load(self) -> Dict[str, float]:
        """The estimates: the median of what was kept of each."""
        return {k: statistics.median(v) for k, v in self._kept().items() if v}

    def save(self, **measured: Optional[float]) -> None:
        """Add ``measured`` to what is kept. Several cutovers of one host may end at once: each reads,
        adds and writes under an flock (no measurement lost), through a temporary file of its own."""
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        with open(self.path + ".lock", "a") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            data = self._kept()
            for key, value in measured.items():
                if value is not None:
                    data[key] = [*data.get(key, []), round(value, 1)][-KEPT_TIMES:]
            tmp = f"{self.path}.{os.getpid()}.{threading.get_ident()}.tmp"
            with open(tmp, "w") as handle:
                json.dump(data, handle)
            os.replace(tmp, self.path)
