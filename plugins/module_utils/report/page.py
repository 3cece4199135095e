"""The wave report: one self-contained HTML page (no script, no external asset) an operator opens
during the night of a cutover.

Charts are inline SVG drawn here, where a chart reads faster than a table: lag per ready VM (what
a cutover now would have to catch up), the bytes and duration of each VM's last syncs (is the
delta shrinking, is a sync's fixed cost dominating), and each cutover's timeline (where the
downtime went). Every value from the record is escaped, text and attributes alike: any member of
the project can edit volume metadata, so a VM name is untrusted input. The page's
Content-Security-Policy forbids every load, so a value that slipped through could not fetch
anything either.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from html import escape
from typing import List, Tuple

from ansible_collections.xms.warm_migration.plugins.module_utils.migration.record import (
    CUTOVER_MARKS,
    CUTOVER_STEP_NAMES,
    MigrationState,
    Phase,
    format_time,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.report.units import (
    human_bytes,
    human_duration,
    human_rate,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.report.wave import (
    WaveReport,
    downtime_text,
    phase_text,
)

STEP_COLOURS = {  # by the mark that ends the step (record.CUTOVER_STEP_NAMES)
    "shutdown": "#9a6700",
    "final_sync": "#0969da",
    "converted": "#8250df",
    "boot_checked": "#bf3989",
    "instance": "#1a7f37",
    "validated": "#0a7d8c",
    "completed": "#6e7781",
}
KIND_COLOURS = {"seed": "#0969da", "incremental": "#1a7f37", "full_resync": "#cf222e", "resume": "#9a6700"}
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #1f2328; font-size: 14px; }
table { border-collapse: collapse; margin-bottom: 1.5em; }
th, td { border: 1px solid #d0d7de; padding: 3px 6px; text-align: right; white-space: nowrap; }
th { background: #f6f8fa; }
td.text { text-align: left; white-space: normal; } td.name { text-align: left; }
.phase-completed { color: #1a7f37; } .phase-ready { color: #0969da; } .phase-cutover { color: #9a6700; }
.phase-syncing, .phase-seeding { color: #8250df; } .error { color: #cf222e; }
.summary span { margin-right: 1.5em; } .empty { color: #656d76; }
svg text { font-size: 12px; fill: #1f2328; } .legend rect { stroke: none; }
"""


def escaped(value: object) -> str:
    return escape(str(value), quote=True)


def document(title: str, parts: List[str], style: str = "") -> str:
    """A self-contained page: ``title`` (escaped here) as title and heading, then ``parts`` (already HTML). Its
    Content-Security-Policy forbids every load, so a value that slipped through escaping could fetch nothing."""
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">",
        f"<title>{escaped(title)}</title><style>{STYLE}{style}</style></head><body>",
        f"<h1>{escaped(title)}</h1>",
        *parts,
        "</body></html>",
    ]) + "\n"  # fmt: skip


def render(report: WaveReport) -> str:
    now = report.made_at
    parts = [
        _summary(report),
        _table(report.migrations, now),
        _problems(report),
        "<h2>Lag per ready VM</h2>",
        _lag_chart(report.migrations, now),
        "<h2>Last syncs per VM: bytes and duration</h2>",
        _sync_charts(report.migrations),
        "<h2>Cutover timeline</h2>",
        _cutover_chart(report.migrations, now),
    ]
    return document(f"{report.title}: {report.wave}", parts)


def _summary(report: WaveReport) -> str:
    phases = Counter(s.phase.value for s in report.migrations)
    counts = ", ".join(f"{n} {phase}" for phase, n in sorted(phases.items())) or "none"
    return (
        f'<p class="summary"><span>{len(report.migrations)} migrations ({escaped(counts)})</span>'
        f"<span>made {escaped(format_time(report.made_at))}</span></p>"
    )


def _table(migrations: List[MigrationState], now: datetime) -> str:
    head = ("VM", "phase", "last sync (UTC)", "lag", "bytes (full)", "bytes (incr)", "syncs", "rate",
            "downtime (~ projected)", "instance", "last error")  # fmt: skip
    rows = ["<table>", "<tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for s in migrations:
        cells = [
            f'<td class="name">{escaped(s.vm_name)}</td>',
            f'<td class="text phase-{escaped(s.phase.value)}">{escaped(phase_text(s, now))}</td>',
            f"<td>{escaped(format_time(s.synced_at) or '-')}</td>",
            f"<td>{escaped(human_duration(s.lag_seconds(now)))}</td>",
            f'<td title="{s.bytes_full} bytes">{escaped(human_bytes(s.bytes_full))}</td>',
            f'<td title="{s.bytes_incr} bytes">{escaped(human_bytes(s.bytes_incr))}</td>',
            f"<td>{s.sync_count}</td>",
            f"<td>{escaped(human_rate(s.rate))}</td>",
            f"<td>{escaped(downtime_text(s, now))}</td>",
            f'<td class="text">{escaped(s.instance_id or "-")}</td>',
            f'<td class="text error">{escaped(s.last_error)}</td>',
        ]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    rows.append("</table>")
    return "\n".join(rows)


def _problems(report: WaveReport) -> str:
    items = [f"<li>{escaped(name)}: no migration in the target project</li>" for name in report.missing]
    items += [
        f"<li>volume(s) {escaped(', '.join(bad.volume_ids))} (migration {escaped(bad.migration_id)}):"
        f" {escaped(bad.reason)}</li>"
        for bad in report.malformed
    ]
    return f'<h2>Needs attention</h2><ul class="problems">{"".join(items)}</ul>' if items else ""


def _svg(css_class: str, width: int, height: int, label: str, body: List[str]) -> str:
    return (
        f'<svg class="chart {css_class}" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escaped(label)}">' + "".join(body) + "</svg>"
    )


def _lag_chart(migrations: List[MigrationState], now: datetime) -> str:
    rows: List[Tuple[str, int]] = []
    for s in migrations:
        lag = s.lag_seconds(now)
        if s.phase in (Phase.READY, Phase.SYNCING) and lag is not None:
            rows.append((s.vm_name, lag))
    if not rows:
        return '<p class="empty">No VM is ready: no lag to show.</p>'
    widest = max(lag for _n, lag in rows) or 1
    body = []
    for i, (name, lag) in enumerate(rows):
        y, width = 26 * i + 4, 420 * lag / widest
        body.append(
            f'<text x="0" y="{y + 14}">{escaped(name[:24])}</text>'
            f'<rect class="bar" x="180" y="{y}" width="{width:.1f}" height="18" fill="#0969da">'
            f"<title>{escaped(name)}: lag {escaped(human_duration(lag))}</title></rect>"
            f'<text x="{186 + width:.1f}" y="{y + 14}">{escaped(human_duration(lag))}</text>'
        )
    return _svg("chart-lag", 720, 26 * len(rows) + 8, "lag per ready VM", body)


def _bars(x0: int, values: List[float], labels: List[str], titles: List[str], colours: List[str]) -> List[str]:
    """One panel of a sync chart: a bar per sync, scaled to the panel's largest, its value above it."""
    top = max(values) or 1
    out = []
    for i, (value, label, title, colour) in enumerate(zip(values, labels, titles, colours)):
        height = 56 * value / top
        x, y = x0 + 56 * i, 104 - height
        out.append(
            f'<rect class="bar" x="{x}" y="{y:.1f}" width="36" height="{height:.1f}" fill="{colour}">'
            f"<title>{escaped(title)}</title></rect>"
            f'<text x="{x + 18}" y="{y - 4:.1f}" text-anchor="middle" font-size="10">{escaped(label)}</text>'
        )
    return out


def _sync_charts(migrations: List[MigrationState]) -> str:
    charts = []
    for s in migrations:
        if not s.history:
            continue
        titles = [
            f"{format_time(h.snapshot_at)} {h.kind}: {human_bytes(h.bytes)} in {human_duration(h.duration_s)}"
            f" (copying {human_duration(h.copy_s)})"
            for h in s.history
        ]
        colours = [KIND_COLOURS.get(h.kind, "#6e7781") for h in s.history]
        sizes, durations = [h.bytes for h in s.history], [h.duration_s for h in s.history]
        body = [
            f'<text x="0" y="14" font-weight="bold">{escaped(s.vm_name)}</text>',
            '<text x="0" y="30" font-size="11">bytes copied</text><text x="360" y="30" font-size="11">duration</text>',
            *_bars(24, sizes, [human_bytes(n) for n in sizes], titles, colours),
            *_bars(384, durations, [human_duration(d) for d in durations], titles, colours),
        ]
        for i, h in enumerate(s.history):
            when = escaped(h.snapshot_at.strftime("%H:%M"))  # the bar's title has the whole time
            for x0 in (24, 384):
                body.append(f'<text x="{x0 + 56 * i + 18}" y="118" text-anchor="middle" font-size="10">{when}</text>')
        charts.append(_svg("chart-sync", 760, 124, f"last syncs of {s.vm_name}", body))
    if not charts:
        return '<p class="empty">No sync has finished yet.</p>'
    legend = " ".join(
        f'<span style="color:{colour}">&#9632; {kind.replace("_", " ")}</span>' for kind, colour in KIND_COLOURS.items()
    )
    return f'<p class="legend">{legend}</p>' + "\n".join(charts)


def _cutover_rows(migrations: List[MigrationState], now: datetime) -> List[Tuple[MigrationState, float]]:
    rows = []
    for s in migrations:
        start = s.cutover_marks.get("started")
        if start is None:
            continue
        last = max(s.cutover_marks.values())
        end = last if s.phase is Phase.COMPLETED else max(last, now)
        rows.append((s, (end - start).total_seconds()))
    return rows


def _cutover_chart(migrations: List[MigrationState], now: datetime) -> str:
    rows = _cutover_rows(migrations, now)
    if not rows:
        return '<p class="empty">No cutover has begun.</p>'
    longest = max(total for _s, total in rows) or 1
    scale = 440 / longest
    body = []
    for i, (mark, name) in enumerate(CUTOVER_STEP_NAMES.items()):
        colour = STEP_COLOURS[mark]
        body.append(
            f'<g class="legend"><rect x="{140 * i}" y="4" width="10" height="10" fill="{colour}"></rect>'
            f'<text x="{140 * i + 14}" y="13" font-size="11">{escaped(name)}</text></g>'
        )
    for i, (s, total) in enumerate(rows):
        y = 30 + 28 * i
        start = s.cutover_marks["started"]
        body.append(f'<text x="0" y="{y + 14}">{escaped(s.vm_name[:24])}</text>')
        previous = start
        for mark in CUTOVER_MARKS[1:]:
            when = s.cutover_marks.get(mark)
            if when is None:
                continue
            name, colour = CUTOVER_STEP_NAMES[mark], STEP_COLOURS[mark]
            x, width = 180 + scale * (previous - start).total_seconds(), scale * (when - previous).total_seconds()
            body.append(
                f'<rect class="step step-{mark}" x="{x:.1f}" y="{y}" width="{max(width, 1):.1f}" height="18" '
                f'fill="{colour}"><title>{escaped(s.vm_name)}: {escaped(name)} '
                f"{escaped(human_duration((when - previous).total_seconds()))}</title></rect>"
            )
            previous = when
        downtime = s.downtime_s(now)
        note = f"down {human_duration(downtime)}" if downtime is not None else "guest not shut down"
        if s.phase is not Phase.COMPLETED:
            note += " (running)" if s.is_busy(now) else " (stopped part-way)"
        body.append(f'<text x="{186 + scale * total:.1f}" y="{y + 14}">{escaped(note)}</text>')
    return _svg("chart-cutover", 960, 30 + 28 * len(rows) + 4, "cutover timeline per VM", body)
