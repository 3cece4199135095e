"""One wave's migrations, read from the record: what the HTML page, the metrics file and the
playbook's table are made from.

A wave is the VMs of one inventory group. Each is matched to its migration by instance UUID when
the inventory names one (the migration id is ``vm-<uuid>``), else by VM name; a VM of the wave
without a migration is listed as such, so a VM left out of the initialize run is not silently
missing from the report.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from typing import List, Sequence, Tuple

from ansible_collections.xms.warm_migration.plugins.module_utils.migration import store
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.record import MigrationState, format_time
from ansible_collections.xms.warm_migration.plugins.module_utils.report.units import (
    human_bytes,
    human_duration,
    human_rate,
)


@dataclass(frozen=True)
class WaveVM:
    """A VM of the wave as the inventory names it."""

    name: str
    uuid: str = ""

    def matches(self, state: MigrationState) -> bool:
        return state.migration_id == f"vm-{self.uuid}" if self.uuid else state.vm_name == self.name


@dataclass
class WaveReport:
    title: str
    wave: str
    made_at: datetime
    migrations: List[MigrationState]
    missing: List[str] = field(default_factory=list)  # VMs of the wave with no migration in the project
    malformed: List[store.Malformed] = field(default_factory=list)


def select(states: Sequence[MigrationState], vms: Sequence[WaveVM]) -> Tuple[List[MigrationState], List[str]]:
    """The migrations of the wave's VMs (every one when the wave names none), and the VMs without one."""
    if not vms:
        return sorted(states, key=lambda s: s.vm_name), []
    chosen, missing = {}, []
    for vm in vms:
        found = [s for s in states if vm.matches(s)]
        chosen.update((s.migration_id, s) for s in found)
        if not found:
            missing.append(vm.name or vm.uuid)
    return sorted(chosen.values(), key=lambda s: s.vm_name), missing


def downtime_text(state: MigrationState, now: datetime) -> str:
    """Measured once the guest went down; ``~`` projected while it is ready; else ``-``."""
    measured = state.downtime_s(now)
    if measured is not None:
        return human_duration(measured)
    projection = state.projection(now)
    return f"~{human_duration(projection.downtime_s)}" if projection else "-"


def phase_text(state: MigrationState, now: datetime) -> str:
    text = state.phase.value
    if state.paused:
        text += " (paused)"
    if state.is_busy(now):
        text += " (running"
        if state.progress_total:
            text += f", {100 * state.progress_done // state.progress_total}% of {human_bytes(state.progress_total)}"
        text += ")"
    return text


def table_lines(report: WaveReport) -> List[str]:
    """The report as a fixed-width table, for the playbook's output."""
    row = "{:<20} {:<30} {:<20} {:>12} {:>11} {:>11} {:>5} {:>12} {:>14}"
    lines = [row.format("VM", "phase", "last sync (UTC)", "lag", "full", "incr", "syncs", "rate", "downtime")]
    for s in report.migrations:
        lines.append(row.format(
            s.vm_name[:20], phase_text(s, report.made_at)[:30], format_time(s.synced_at) or "-",
            human_duration(s.lag_seconds(report.made_at)), human_bytes(s.bytes_full), human_bytes(s.bytes_incr),
            s.sync_count, human_rate(s.rate), downtime_text(s, report.made_at),
        ))  # fmt: skip
    lines.extend(
        f"{name}: no migration in the target project (run the seed playbook for it)" for name in report.missing
    )
    return lines


def write_atomically(path: str, text: str) -> None:
    """Readers (a browser, node_exporter's textfile collector) see the old file or the new, never half.

    The temporary name starts with a dot and does not end in ``.prom``: the textfile collector skips it."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the page and the metrics from their readers
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
