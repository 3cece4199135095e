"""One line of progress per VM for the playbook's output, from the record as migration_info reports it."""

from __future__ import annotations

from typing import Any, Mapping

from ansible_collections.xms.warm_migration.plugins.module_utils.report.units import (
    human_bytes,
    human_duration,
    human_rate,
)


def progress_line(migration: Mapping[str, Any]) -> str:
    """``web01: seeding 1.2 GiB of 4.0 GiB (30%) at 95.4 MiB/s, ETA 31 s``; a cutover: its last step."""
    name, phase = migration.get("vm_name", "?"), migration.get("phase", "?")
    if phase == "cutover":
        done = migration.get("cutover_step") or "nothing yet"
        down = migration.get("downtime_seconds")
        tail = f", guest down {human_duration(down)} so far" if down is not None else ", guest still up"
        return f"{name}: cutover, steps done up to {done}{tail}"
    progress = migration.get("progress") or {}
    total, done = progress.get("total") or 0, progress.get("done") or 0
    if not migration.get("busy") or not total:
        return f"{name}: {phase}, preparing (snapshot, changed areas, attachments)" if migration.get("busy") else ""
    rate = migration.get("rate_bytes_per_second") or 0
    eta = f", ETA {human_duration((total - done) / rate)}" if rate > 0 and done < total else ""
    return (f"{name}: {phase} {human_bytes(done)} of {human_bytes(total)} ({100 * done // total}%)"
            f" at {human_rate(rate)}{eta}")  # fmt: skip
