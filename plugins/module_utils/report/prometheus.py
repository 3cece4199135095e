"""The wave's figures in Prometheus' text format, for node_exporter's textfile collector.

One series per VM and figure, labelled ``vm``, ``migration_id`` and ``wave``; a figure a
migration does not have yet (a lag before the seed, a measured downtime before the cutover) is
left out rather than written as 0, so an alert on it does not fire for the wrong reason. The
phase is a state set: one series per phase, 1 for the current one. The file carries its own
time (``xms_warm_migration_report_timestamp_seconds``) so a dashboard can tell a stale report.
"""

from __future__ import annotations

from typing import Dict, List, Optional

from ansible_collections.xms.warm_migration.plugins.module_utils.migration.record import CADENCES, Phase
from ansible_collections.xms.warm_migration.plugins.module_utils.report.wave import WaveReport

PREFIX = "xms_warm_migration_"
# name: (type, help)
METRICS = {
    "report_timestamp_seconds": ("gauge", "When this wave's report was written (Unix time)."),
    "phase": ("gauge", "1 for the migration's current phase, 0 for the others."),
    "paused": ("gauge", "1 while the migration's incremental syncs are paused."),
    "last_sync_timestamp_seconds": ("gauge", "When the snapshot of the last complete sync was taken (Unix time)."),
    "lag_seconds": ("gauge", "Seconds since the last complete sync's snapshot: what a cutover now would catch up."),
    "copied_bytes_total": ("counter", "Bytes copied: kind=full by seeds and full resyncs, kind=incremental by others."),
    "syncs_total": ("counter", "Completed syncs, the seed included."),
    "sync_rate_bytes_per_second": ("gauge", "Copy rate of the last sync, or of the running one."),
    "projected_downtime_seconds": ("gauge", "Downtime a cutover starting now would cause (while ready)."),
    "downtime_seconds": ("gauge", "Downtime of the cutover: guest down to instance ACTIVE (so far, while it runs)."),
    "cadence_seconds": ("gauge", "How often the migration's incremental syncs are due (absent for manual)."),
    "failed_syncs": ("gauge", "Syncs that failed in a row since the last complete one."),
    "last_error": ("gauge", "1 with the last error of a run of the migration (its first 120 characters) as label."),
    "heartbeat_age_seconds": ("gauge", "Seconds since the running sync or cutover last reported (a stalled run ages)."),
    "running_copy_done_bytes": ("gauge", "Bytes the running copy has done."),
    "running_copy_total_bytes": ("gauge", "Bytes the running copy has to do."),
}  # fmt: skip


def _label_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: Dict[str, str]) -> str:
    return "{" + ",".join(f'{k}="{_label_value(v)}"' for k, v in labels.items()) + "}"


def render(report: WaveReport) -> str:
    now = report.made_at
    samples: Dict[str, List[str]] = {name: [] for name in METRICS}

    def add(name: str, labels: Dict[str, str], value: Optional[float]) -> None:
        if value is not None:
            text = str(int(value)) if float(value).is_integer() else repr(float(value))
            samples[name].append(f"{PREFIX}{name}{_labels(labels)} {text}")

    add("report_timestamp_seconds", {"wave": report.wave}, int(now.timestamp()))
    for s in report.migrations:
        vm = {"vm": s.vm_name, "migration_id": s.migration_id, "wave": report.wave}
        for phase in Phase:
            add("phase", {**vm, "phase": phase.value}, int(s.phase is phase))
        add("paused", vm, int(s.paused))
        add("last_sync_timestamp_seconds", vm, int(s.synced_at.timestamp()) if s.synced_at else None)
        add("lag_seconds", vm, s.lag_seconds(now))
        add("copied_bytes_total", {**vm, "kind": "full"}, s.bytes_full)
        add("copied_bytes_total", {**vm, "kind": "incremental"}, s.bytes_incr)
        add("syncs_total", vm, s.sync_count)
        add("sync_rate_bytes_per_second", vm, round(s.rate, 1))
        projection = s.projection(now)
        add("projected_downtime_seconds", vm, round(projection.downtime_s) if projection else None)
        add("downtime_seconds", vm, s.downtime_s(now))
        add("cadence_seconds", vm, CADENCES.get(s.cadence))
        add("failed_syncs", vm, s.failed_syncs)
        if s.last_error:
            add("last_error", {**vm, "error": s.last_error[:120]}, 1)
        if s.owner:
            add("heartbeat_age_seconds", vm, round((now - s.heartbeat).total_seconds()) if s.heartbeat else None)
            if s.progress_total:
                add("running_copy_done_bytes", vm, s.progress_done)
                add("running_copy_total_bytes", vm, s.progress_total)
    lines = []
    for name, (kind, text) in METRICS.items():
        if samples[name]:
            lines += [f"# HELP {PREFIX}{name} {text}", f"# TYPE {PREFIX}{name} {kind}", *samples[name]]
    return "\n".join(lines) + "\n"
