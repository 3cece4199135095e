"""How long a cutover would keep the VM down, projected from the syncs a migration has run.

The downtime is the final delta plus the conversion plus the instance step. The final delta is
what the guest changes between the last sync's snapshot and the shutdown, copied at the rate the
syncs reached plus a sync's fixed cost (snapshot, attach, flush). Both come from the record's
sync history: the change rate from consecutive incrementals (bytes they copied over the time
between their snapshots: what CBT reported changed), the copy rate and fixed cost from how long
syncs of different sizes took. Conversion and instance times are what this conversion host
measured last (defaults until it has measured any).

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
from typing import Dict, List, Optional

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


def format_history(samples: List[SyncSample]) -> str:
    """``epoch:kind:bytes:ms:copy_ms;...``, the newest last: at most HISTORY of them, and only as many of
    the newest as fit a record value (VALUE_LIMIT characters): a multi-TB seed and hour-long syncs take
    over 40 characters a sample, and then the oldest ones are left out (the projection uses the newest)."""
    items = [
        f"{int(s.snapshot_at.timestamp())}:{KINDS.get(s.kind, 'i')}:{s.bytes}:{int(s.duration_s * 1000)}"
        f":{int(s.copy_s * 1000)}"
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


@dataclass
class Projection:
    change_rate: float  # bytes/s the guest changes
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
    """(change rate, copy rate, fixed cost) from the history, or None before it can say.

    Change rate: the mean over the last three incrementals of bytes over the time since the
    snapshot before (what CBT reported changed, per second). Copy rate: the newest sync that
    copied anything, bytes over its engine time (a bandwidth limit or a slower link shows at
    once). Fixed cost: the mean over the last three syncs of their time outside the engine.
    """
    changes = [
        cur.bytes / max(1.0, (cur.snapshot_at - prev.snapshot_at).total_seconds())
        for prev, cur in zip(samples, samples[1:])
        if cur.kind == "incremental"
    ][-3:]
    copied = [s for s in samples if s.bytes > 0 and s.copy_s > 0]
    if not changes or not copied:
        return None
    copy_rate = copied[-1].bytes / copied[-1].copy_s
    overheads = [max(0.0, s.duration_s - s.copy_s) for s in samples[-3:]]
    return sum(changes) / len(changes), max(copy_rate, 1.0), sum(overheads) / len(overheads)


def project(
    samples: List[SyncSample],
    *,
    since_snapshot_s: float,
    conversion_s: Optional[float],
    instance_s: Optional[float],
    convert: bool = True,
) -> Optional[Projection]:
    """The downtime of a cutover whose shutdown ends ``since_snapshot_s`` after the last sync's snapshot."""
    found = rates(samples)
    if found is None:
        return None
    change_rate, copy_rate, fixed = found
    delta = int(change_rate * since_snapshot_s)
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
