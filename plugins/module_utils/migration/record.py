"""The migration record: the durable state of one migration, kept on its target volumes.

Why on the volumes: the volumes are the one thing that exists for the whole
life of a migration, in the target cloud, visible to every conversion host and
every AWX job. Each volume carries the fields of its own disk and a copy of
the migration-wide fields, so any one volume is enough to know where a
migration stands. Values are strings (Cinder metadata); the OpenStack adapter
stores them under ``xms_``-prefixed keys.

Who writes what (one owner per field): the operator (migration_schedule) writes
only ``paused`` and ``cadence`` (OPERATOR_FIELDS, versioned by
``operator_revision``); a test migration (migration_test) only ``test``
(TEST_FIELDS: its newest copy wins, by the time it names); whoever holds the migration - a sync, a cutover or a
rollback, one at a time under the host lock - writes the rest (RUN_FIELDS,
versioned by ``revision``), and while it runs a timer refreshes its heartbeat
(HEARTBEAT_FIELDS). A pause set while a sync runs is therefore never lost when
the sync reports.

Ordering rule (the invariant users rely on): a disk's ``change_id`` is written
only after every byte of the sync it names has been written *and flushed*; the
migration-wide fields (phase ``ready``, ``synced_at``, counters) only after
every disk of that sync is done. A crash in between leaves each disk at a
change id whose data is on the volume, and the next sync copies everything
changed since then.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Dict, List, Optional

from ansible_collections.xms.warm_migration.plugins.module_utils.migration.projection import (
    MEASURED,
    SHUTDOWN_S,
    DiskChanges,
    Projection,
    SyncSample,
    format_copied,
    format_history,
    parse_copied,
    parse_history,
    project,
)


class Phase(str, Enum):
    """Where a migration stands (stored as the value: ``xms_phase``)."""

    INITIALIZING = "initializing"  # volumes created, nothing copied yet
    SEEDING = "seeding"  # the first full copy runs (or stopped part-way)
    READY = "ready"  # idle between syncs
    SYNCING = "syncing"  # an incremental runs (or stopped part-way)
    CUTOVER = "cutover"  # the cutover runs, or stopped part-way: syncs end here
    COMPLETED = "completed"  # the instance runs; the source is off and marked migrated


CADENCES = {"manual": None, "15m": 15 * 60, "hourly": 3600, "daily": 86400}
IDENTITY_FIELDS = ("migration_id", "vm_name")  # written once, at init
OPERATOR_FIELDS = ("paused", "cadence", "operator_revision")
TEST_FIELDS = ("test",)  # the last test migration: written by migration_test alone, syncs go on meanwhile
HEARTBEAT_FIELDS = ("owner", "heartbeat", "progress", "rate")
HEARTBEAT_STALE_S = 600  # a sync that has not reported for this long is presumed dead


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def format_time(when: Optional[datetime]) -> str:
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") if when else ""


def parse_time(text: str) -> Optional[datetime]:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc) if text else None


def sample_dict(sample: SyncSample) -> Dict[str, object]:
    return {"at": format_time(sample.snapshot_at), "kind": sample.kind, "bytes": sample.bytes,
            "duration_seconds": round(sample.duration_s, 1), "copy_seconds": round(sample.copy_s, 1)}  # fmt: skip


def _rounded(projection: Optional[Projection]) -> Optional[int]:
    return None if projection is None else round(projection.downtime_s)


# When each point of a cutover was reached, in order: the run began, the guest was down, each step
# ended (boot_checked: the boot check passed; validated: the guest showed in the cloud that it runs). Downtime
# runs from 'shutdown' to 'instance' (ACTIVE).
CUTOVER_MARKS = ("started", "shutdown", "final_sync", "converted", "boot_checked", "instance", "validated",
                 "completed")  # fmt: skip
# The step each mark after "started" ends, as the operator reads it (the report, the cutover summary).
CUTOVER_STEP_NAMES = {
    "shutdown": "guest shutdown",
    "final_sync": "final delta",
    "converted": "conversion",
    "boot_checked": "boot check",
    "instance": "instance to ACTIVE",
    "validated": "validation in the cloud",
    "completed": "wrap-up",
}


def _format_named(values: Dict[str, str], names) -> str:
    """``name=value,...`` in ``names`` order: well under Cinder's 255 characters per value."""
    return ",".join(f"{n}={values[n]}" for n in names if n in values)


def _parse_named(text: str, names) -> Dict[str, str]:
    """The values of ``names`` in a ``name=value,...`` string; unknown names and empty values dropped."""
    pairs = (item.partition("=") for item in filter(None, text.split(",")))
    return {name: value for name, _eq, value in pairs if name in names and value}


def format_marks(marks: Dict[str, datetime]) -> str:
    return _format_named({m: format_time(t) for m, t in marks.items()}, CUTOVER_MARKS)


def parse_marks(text: str) -> Dict[str, datetime]:
    return {m: parse_time(t) for m, t in _parse_named(text, CUTOVER_MARKS).items()}


# A test migration's steps, in order (seconds each, from the end of the step before).
TEST_STEPS = ("cloned", "converted", "boot_checked", "instance")


@dataclass
class MigrationTestRun:
    """The last test migration: a clone of the replica converted and booted while syncs went on."""

    at: datetime  # when its clones were taken: the point of the replica it booted
    result: str  # passed | failed | removed (its instance and clones deleted since)
    instance_id: str = ""
    timings: Dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> Dict[str, object]:
        return {"at": format_time(self.at), "result": self.result, "instance_id": self.instance_id or None,
                "timings": self.timings}  # fmt: skip


def format_test(run: Optional[MigrationTestRun]) -> str:
    if run is None:
        return ""
    values = {"at": format_time(run.at), "result": run.result, "server": run.instance_id}
    values.update({step: str(s) for step, s in run.timings.items()})
    return _format_named(values, ("at", "result", "server", *TEST_STEPS))


def parse_test(text: str) -> Optional[MigrationTestRun]:
    values = _parse_named(text, ("at", "result", "server", *TEST_STEPS))
    try:
        at = parse_time(values.get("at", ""))
        timings = {step: int(values[step]) for step in TEST_STEPS if step in values}
    except ValueError:
        return None  # a hand-edited value: no test on record
    if at is None or "result" not in values:
        return None
    return MigrationTestRun(at=at, result=values["result"], instance_id=values.get("server", ""), timings=timings)


def format_addresses(addresses: Dict[str, List[str]], limit: int = 250) -> str:
    """``mac=address address,mac=address``: as many whole NICs as fit Cinder's 255 characters per value."""
    text = ""
    for mac, found in addresses.items():
        entry = f"{mac}={' '.join(found)}"
        if len(text) + len(entry) + 1 > limit:
            break
        text = f"{text},{entry}" if text else entry
    return text


def format_words(words: List[str], limit: int = 250) -> str:
    """``word word``: as many whole words as fit Cinder's 255 characters per value."""
    text = ""
    for word in words:
        if len(text) + len(word) + 1 > limit:
            break
        text = f"{text} {word}" if text else word
    return text


def parse_addresses(text: str) -> Dict[str, List[str]]:
    pairs = (item.partition("=") for item in filter(None, text.split(",")))
    return {mac: found.split() for mac, _eq, found in pairs if found}


def finite(text: str) -> float:
    """``text`` as a float, or ValueError for nan and inf: one such value would make every figure
    computed from it (lag, rate, projection) unprintable, and the report of every migration fail."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite number")
    return value


def format_estimates(estimates: Dict[str, float]) -> str:
    return _format_named({k: f"{v:.0f}" for k, v in estimates.items()}, MEASURED)


def parse_estimates(text: str) -> Dict[str, float]:
    out = {}
    for key, value in _parse_named(text, MEASURED).items():
        try:
            out[key] = finite(value)
        except ValueError:
            continue  # a hand-edited value: the others still count
    return out


@dataclass
class DiskState:
    """One source disk and its target volume."""

    disk_key: int
    volume_id: str
    index: int  # order of the disk on the VM; index 0 boots
    capacity: int
    change_id: str = ""  # change id of the last snapshot whose data is fully on the volume
    pending_change_id: str = ""  # change id of the snapshot a sync was copying when it stopped
    label: str = ""
    # Bytes each of the last syncs copied of this disk, by the epoch of the sync's snapshot: the projection
    # saturates each disk's delta at its own capacity.
    copied: Dict[int, int] = field(default_factory=dict)

    def changes(self) -> DiskChanges:
        return DiskChanges(self.capacity, self.copied)

    @property
    def seeded(self) -> bool:
        return bool(self.change_id)


@dataclass
class MigrationState:
    """Everything known about one migration, rebuilt from its volumes' metadata."""

    migration_id: str
    vm_name: str
    phase: Phase = Phase.INITIALIZING
    cadence: str = "manual"
    paused: bool = False
    synced_at: Optional[datetime] = None
    sync_count: int = 0
    bytes_full: int = 0
    bytes_incr: int = 0
    rate: float = 0.0  # bytes/s of the last (or running) sync
    owner: str = ""  # "host:pid" of the sync or cutover running now
    heartbeat: Optional[datetime] = None
    progress_done: int = 0
    progress_total: int = 0
    cutover_step: str = ""  # last cutover step completed, so a rerun resumes after it
    cutover_marks: Dict[str, datetime] = field(default_factory=dict)  # CUTOVER_MARKS reached, and when
    history: List[SyncSample] = field(default_factory=list)  # the last syncs (projection.HISTORY)
    estimates: Dict[str, float] = field(default_factory=dict)  # the conversion host's measured step times
    converted: bool = False
    needs_full_resync: bool = False  # the volumes were changed outside a sync (e.g. converted, then rolled back)
    instance_id: str = ""
    # Per MAC, the addresses VMware Tools saw on the source's NICs when the cutover shut it down (see
    # inventory.guest_addresses): a cutover resumed after the shutdown still knows them.
    guest_addresses: Dict[str, List[str]] = field(default_factory=dict)
    guest_gateway: str = ""  # and the guest's default gateway and DNS servers then (inventory.guest_routing)
    guest_dns: List[str] = field(default_factory=list)
    validation: str = ""  # the cutover's evidence that the guest runs: "passed: ...", "failed: ..." or "off"
    last_error: str = ""
    failed_syncs: int = 0  # syncs that failed in a row since the last complete one (the monitoring's alert)
    test: Optional[MigrationTestRun] = None  # the last test migration (TEST_FIELDS)
    revision: int = 0  # bumped on every write of the run fields; the highest copy wins
    operator_revision: int = 0  # bumped on every write of the operator's fields; the highest copy wins
    disks: List[DiskState] = field(default_factory=list)

    # --- views -------------------------------------------------------------------------
    @property
    def seeded(self) -> bool:
        return bool(self.disks) and all(d.seeded for d in self.disks)

    def lag_seconds(self, now: Optional[datetime] = None) -> Optional[int]:
        """Seconds since the snapshot of the last complete sync: how much work a cutover would lose.

        None before the seed, and once completed: the source is off, nothing more can be lost."""
        if not self.synced_at or self.phase is Phase.COMPLETED:
            return None
        return max(0, int(((now or utcnow()) - self.synced_at).total_seconds()))

    def downtime_s(self, now: Optional[datetime] = None) -> Optional[int]:
        """Seconds from the guest going down to its instance answering (validated), or being ACTIVE when
        validation is off or has not ended; so far, while the cutover runs."""
        down = self.cutover_marks.get("shutdown")
        if down is None:
            return None
        up = self.cutover_marks.get("validated") or self.cutover_marks.get("instance") or (now or utcnow())
        return max(0, int((up - down).total_seconds()))

    def projection(self, now: Optional[datetime] = None, convert: bool = True) -> Optional[Projection]:
        """The downtime a cutover starting now would cause, or None before an incremental has run, and
        once the guest went down (a cutover that stopped before its shutdown still projects)."""
        if self.phase is Phase.COMPLETED or self.cutover_step or not self.synced_at:
            return None
        since = ((now or utcnow()) - self.synced_at).total_seconds() + self.estimates.get("shutdown_s", SHUTDOWN_S)
        return project(
            self.history,
            [disk.changes() for disk in self.disks],
            since_snapshot_s=since,
            conversion_s=self.estimates.get("conversion_s"),
            instance_s=self.estimates.get("instance_s"),
            convert=convert and not self.converted,
        )

    def cutover_timings(self) -> Dict[str, int]:
        """Seconds each cutover step took (from the mark before it): where the downtime went."""
        timings, previous = {}, None
        for mark in CUTOVER_MARKS:
            when = self.cutover_marks.get(mark)
            if when is None:
                continue
            if previous is not None:
                timings[mark] = max(0, int((when - previous).total_seconds()))
            previous = when
        return timings

    def is_busy(self, now: Optional[datetime] = None) -> bool:
        """A sync or cutover holds this migration and has reported recently."""
        if not self.owner or not self.heartbeat:
            return False
        return ((now or utcnow()) - self.heartbeat).total_seconds() < HEARTBEAT_STALE_S

    def sync_due(self, now: Optional[datetime] = None) -> bool:
        """Whether the cadence asks for a sync now (a never-synced migration is always due)."""
        period = CADENCES[self.cadence]
        if not self.synced_at:
            return True
        if period is None:
            return False
        return ((now or utcnow()) - self.synced_at).total_seconds() >= period

    def metrics(self, now: Optional[datetime] = None) -> Dict[str, object]:
        """The figures every migration reports, with stable keys (documented in migration_info)."""
        return {
            "migration_id": self.migration_id,
            "vm_name": self.vm_name,
            "phase": self.phase.value,
            "paused": self.paused,
            "cadence": self.cadence,
            "last_sync": format_time(self.synced_at) or None,
            "lag_seconds": self.lag_seconds(now),
            "bytes_full": self.bytes_full,
            "bytes_incr": self.bytes_incr,
            "sync_count": self.sync_count,
            "rate_bytes_per_second": round(self.rate, 1),
            "progress": {"done": self.progress_done, "total": self.progress_total} if self.owner else None,
            "busy": self.is_busy(now),
            "cutover_step": self.cutover_step or None,
            "downtime_seconds": self.downtime_s(now),
            "projected_downtime_seconds": _rounded(self.projection(now)),
            "cutover_timings": self.cutover_timings() or None,
            "cutover_marks": {m: format_time(t) for m, t in self.cutover_marks.items()} or None,
            "history": [sample_dict(s) for s in self.history],
            "converted": self.converted,
            "instance_id": self.instance_id or None,
            "validation": self.validation or None,
            "last_error": self.last_error or None,
            "test": self.test.as_dict() if self.test else None,
            "disks": [
                {"disk_key": d.disk_key, "label": d.label, "volume_id": d.volume_id, "change_id": d.change_id or None}
                for d in self.disks
            ],
        }

    # --- encoding --------------------------------------------------------------------------
    def common_fields(self) -> Dict[str, str]:
        """The migration-wide fields, as stored on every volume."""
        return {
            "migration_id": self.migration_id,
            "vm_name": self.vm_name,
            "phase": self.phase.value,
            "cadence": self.cadence,
            "paused": "true" if self.paused else "false",
            "synced_at": format_time(self.synced_at),
            "sync_count": str(self.sync_count),
            "bytes_full": str(self.bytes_full),
            "bytes_incr": str(self.bytes_incr),
            "rate": f"{self.rate:.1f}",
            "owner": self.owner,
            "heartbeat": format_time(self.heartbeat),
            "progress": f"{self.progress_done}/{self.progress_total}",
            "cutover_step": self.cutover_step,
            "cutover_marks": format_marks(self.cutover_marks),
            "history": format_history(self.history),
            "estimates": format_estimates(self.estimates),
            "converted": "true" if self.converted else "false",
            "needs_full_resync": "true" if self.needs_full_resync else "false",
            "instance_id": self.instance_id,
            "guest_addresses": format_addresses(self.guest_addresses),
            "guest_gateway": self.guest_gateway,
            "guest_dns": format_words(self.guest_dns),
            "validation": self.validation[:250],
            "last_error": self.last_error[:250],
            "failed_syncs": str(self.failed_syncs),
            "test": format_test(self.test),
            "revision": str(self.revision),
            "operator_revision": str(self.operator_revision),
        }

    def run_fields(self) -> Dict[str, str]:
        """What the holder of the migration (sync, cutover, rollback) writes: all but identity and operator."""
        owned_elsewhere = IDENTITY_FIELDS + OPERATOR_FIELDS + TEST_FIELDS
        return {k: v for k, v in self.common_fields().items() if k not in owned_elsewhere}

    def operator_fields(self) -> Dict[str, str]:
        return {k: v for k, v in self.common_fields().items() if k in OPERATOR_FIELDS}

    def test_fields(self) -> Dict[str, str]:
        return {k: v for k, v in self.common_fields().items() if k in TEST_FIELDS}

    def heartbeat_fields(self) -> Dict[str, str]:
        return {k: v for k, v in self.common_fields().items() if k in HEARTBEAT_FIELDS}

    @staticmethod
    def disk_fields(disk: DiskState) -> Dict[str, str]:
        return {
            "disk_key": str(disk.disk_key),
            "disk_index": str(disk.index),
            "disk_label": disk.label,
            "capacity": str(disk.capacity),
            "change_id": disk.change_id,
            "pending_change_id": disk.pending_change_id,
            "volume_id": disk.volume_id,  # a record copied onto another volume names the wrong one
            "copied": format_copied(disk.copied),
        }

    @classmethod
    def from_volumes(cls, volumes: List[tuple]) -> MigrationState:
        """Rebuild the state from ``[(volume_id, record_dict), ...]`` of one migration.

        The run fields are taken from the copy with the highest revision, the
        operator's from the copy with the highest operator revision, so a crash
        between two volume updates never rolls the phase back to an older value. Two
        claims of one revision (two hosts at the same moment: ownership.py) are told
        apart by their owner, so every reader picks the same copy.
        """
        if not volumes:
            raise ValueError("a migration has at least one volume")
        records = [rec for _volume_id, rec in volumes]
        newest = max(records, key=lambda r: (int(r.get("revision") or 0), r.get("owner", "")))
        operator = max(records, key=lambda r: (int(r.get("operator_revision") or 0), int(r.get("revision") or 0)))
        done, _slash, total = newest.get("progress", "0/0").partition("/")
        state = cls(
            migration_id=newest["migration_id"],
            vm_name=newest.get("vm_name", ""),
            phase=Phase(newest.get("phase") or Phase.INITIALIZING.value),
            cadence=operator.get("cadence", "manual"),
            paused=operator.get("paused") == "true",
            synced_at=parse_time(newest.get("synced_at", "")),
            sync_count=int(newest.get("sync_count") or 0),
            bytes_full=int(newest.get("bytes_full") or 0),
            bytes_incr=int(newest.get("bytes_incr") or 0),
            rate=finite(newest.get("rate") or "0"),
            owner=newest.get("owner", ""),
            heartbeat=parse_time(newest.get("heartbeat", "")),
            progress_done=int(done or 0),
            progress_total=int(total or 0),
            cutover_step=newest.get("cutover_step", ""),
            cutover_marks=parse_marks(newest.get("cutover_marks", "")),
            history=parse_history(newest.get("history", "")),
            estimates=parse_estimates(newest.get("estimates", "")),
            converted=newest.get("converted") == "true",
            needs_full_resync=newest.get("needs_full_resync") == "true",
            instance_id=newest.get("instance_id", ""),
            guest_addresses=parse_addresses(newest.get("guest_addresses", "")),
            guest_gateway=newest.get("guest_gateway", ""),
            guest_dns=newest.get("guest_dns", "").split(),
            validation=newest.get("validation", ""),
            last_error=newest.get("last_error", ""),
            failed_syncs=int(newest.get("failed_syncs") or 0),
            test=max((parse_test(r.get("test", "")) for r in records), key=lambda t: t.at if t else _EPOCH),
            revision=int(newest.get("revision") or 0),
            operator_revision=int(operator.get("operator_revision") or 0),
        )
        for volume_id, rec in volumes:
            state.disks.append(
                DiskState(
                    disk_key=int(rec["disk_key"]),
                    volume_id=volume_id,
                    index=int(rec.get("disk_index") or 0),
                    capacity=int(rec.get("capacity") or 0),
                    change_id=rec.get("change_id", ""),
                    pending_change_id=rec.get("pending_change_id", ""),
                    label=rec.get("disk_label", ""),
                    copied=parse_copied(rec.get("copied", "")),
                )
            )
        state.disks.sort(key=lambda d: d.index)
        return state
