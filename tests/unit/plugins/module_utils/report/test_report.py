"""The wave report's page, metrics file and table, from a record made here (no cloud needed).

promtool (Debian's prometheus package) checks the metrics text as Prometheus would take it."""

import json
import re
import subprocess
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path

from ansible_collections.xms.warm_migration.plugins.module_utils.migration.projection import SyncSample
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.record import (
    DiskState,
    MigrationState,
    Phase,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.report import page, prometheus
from ansible_collections.xms.warm_migration.plugins.module_utils.report.units import (
    human_bytes,
    human_duration,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.report.wave import (
    WaveReport,
    WaveVM,
    select,
    table_lines,
)

NOW = datetime(2026, 11, 24, 12, 0, 0, tzinfo=timezone.utc)
HOSTILE = '<script>alert("x")</script>&\'"'


def migration(name, phase, **fields):
    state = MigrationState(migration_id=f"vm-{name}", vm_name=name, phase=phase, **fields)
    state.disks = [DiskState(disk_key=2000, volume_id=f"vol-{name}", index=0, capacity=1 << 30, change_id="1")]
    return state


def wave():
    at = NOW - timedelta(hours=3)
    history = [SyncSample(at, "seed", 10 << 30, 600.0, 540.0)] + [
        SyncSample(at + timedelta(hours=i), "incremental", (60 - 10 * i) << 20, 25.0 - i, 2.0) for i in range(1, 3)
    ]
    ready = migration("web01", Phase.READY, synced_at=NOW - timedelta(minutes=14), sync_count=3,
                      bytes_full=10 << 30, bytes_incr=90 << 20, rate=95e6, history=history)  # fmt: skip
    marks = {"started": NOW - timedelta(minutes=30)}
    for mark, minutes in (("shutdown", 29), ("final_sync", 28), ("converted", 24), ("boot_checked", 23),
                          ("instance", 22), ("validated", 21.5), ("completed", 21)):  # fmt: skip
        marks[mark] = NOW - timedelta(minutes=minutes)
    done = migration("db01", Phase.COMPLETED, synced_at=NOW - timedelta(minutes=28), sync_count=4, bytes_full=20 << 30,
                     cutover_marks=marks, instance_id="5d1c-instance", history=history[:2])  # fmt: skip
    hostile = migration(HOSTILE, Phase.SEEDING, last_error=HOSTILE)
    return WaveReport(title="Wave <1>", wave="wave1", made_at=NOW, migrations=[done, hostile, ready], missing=["app02"])


class Elements(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.classes = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.classes.extend((dict(attrs).get("class") or "").split())


def test_units_read_as_an_operator_reads_them():
    assert human_bytes(100073472) == "95.4 MiB"
    assert human_bytes(512) == "512 B"
    assert human_bytes(10 << 30) == "10.0 GiB"
    assert human_duration(45) == "45 s"
    assert human_duration(723) == "12 min 03 s"
    assert human_duration(7500) == "2 h 05 min"
    assert human_duration(None) == "-"


def test_the_page_escapes_every_value_and_loads_nothing():
    html = page.render(wave())
    assert "<script" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#x27;&quot;" in html
    assert "Wave &lt;1&gt;" in html
    assert "default-src 'none'" in html
    assert not re.search(r"(src|href)=", html), "the page must not load anything"


def test_the_page_has_a_chart_for_each_question():
    parser = Elements()
    parser.feed(page.render(wave()))
    assert parser.classes.count("chart-lag") == 1
    assert parser.classes.count("chart-sync") == 2  # web01 and db01 have syncs; the seeding VM none yet
    assert parser.classes.count("chart-cutover") == 1
    assert parser.classes.count("step") == 7  # db01's seven cutover steps
    html = page.render(wave())
    assert "10.0 GiB" in html and "~" in html  # human units; web01's projected downtime
    assert "app02: no migration in the target project" in html


def test_the_table_has_a_line_per_vm_and_says_what_is_missing():
    lines = table_lines(wave())
    assert len(lines) == 1 + 3 + 1
    assert "10.0 GiB" in lines[3] and "14 min 00 s" in lines[3]
    assert lines[-1].startswith("app02: no migration")


def test_the_wave_is_matched_by_uuid_first_then_by_name():
    report = wave()
    chosen, missing = select(report.migrations, [WaveVM("web01"), WaveVM("renamed", uuid="db01"), WaveVM("x")])
    assert [s.vm_name for s in chosen] == ["db01", "web01"]
    assert missing == ["x"]
    assert len(select(report.migrations, [])[0]) == 3


def test_the_metrics_are_what_promtool_accepts(tmp_path):
    text = prometheus.render(wave())
    assert 'xms_warm_migration_phase{vm="web01",migration_id="vm-web01",wave="wave1",phase="ready"} 1' in text
    assert 'xms_warm_migration_lag_seconds{vm="web01",migration_id="vm-web01",wave="wave1"} 840' in text
    assert 'xms_warm_migration_downtime_seconds{vm="db01",migration_id="vm-db01",wave="wave1"} 450' in text
    assert 'vm="<script>alert(\\"x\\")</script>&\'\\""' in text  # label values escaped as the format says
    assert 'lag_seconds{vm="db01"' not in text  # completed: no lag, rather than a 0
    run = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout + run.stderr == ""


def test_the_grafana_dashboard_asks_only_for_metrics_the_report_writes(tmp_path):
    """Every query of docs/grafana names a metric of the file, and is PromQL promtool accepts (as a rule,
    with Grafana's variables given values)."""
    root = Path(__file__).parents[5]
    dashboard = json.loads((root / "docs" / "grafana" / "warm-migration.json").read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    written = {prometheus.PREFIX + name for name in prometheus.METRICS}
    for query in queries:
        names = set(re.findall(r"xms_warm_migration_\w+", query))
        assert names and names <= written, query
    values = {"$wave": ".*", "$vm": ".*", "$__range": "1h"}
    for name, value in values.items():
        queries = [q.replace(name, value) for q in queries]
    rules = [{"record": f"check:query{i}", "expr": q} for i, q in enumerate(queries)]
    path = tmp_path / "rules.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    run = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_new_series_say_what_a_stalled_or_failing_migration_does():
    running = migration("app01", Phase.READY, cadence="15m", owner="conv-1:42:ab", heartbeat=NOW - timedelta(minutes=7),
                        progress_done=3 << 30, progress_total=8 << 30, failed_syncs=2,
                        last_error="CBT reset on disk 2000")  # fmt: skip
    text = prometheus.render(WaveReport(title="w", wave="wave1", made_at=NOW, migrations=[running]))
    labels = '{vm="app01",migration_id="vm-app01",wave="wave1"}'
    error = 'last_error{vm="app01",migration_id="vm-app01",wave="wave1",error="CBT reset on disk 2000"} 1'
    copy = (f"running_copy_done_bytes{labels} {3 << 30}", f"running_copy_total_bytes{labels} {8 << 30}")
    for line in (f"cadence_seconds{labels} 900", f"failed_syncs{labels} 2", f"heartbeat_age_seconds{labels} 420",
                 *copy, error):  # fmt: skip
        assert prometheus.PREFIX + line in text, line
    idle = prometheus.render(wave())
    assert "heartbeat_age_seconds" not in idle and 'cadence_seconds{vm="web01"' not in idle  # manual: absent


# The alerts' descriptions for web01 of wave1, as docs/prometheus/alerts.yml words them.
LAGGING = ("The last complete sync of web01 (wave wave1) is over three cadences old. Check the sync schedule's last"
           " jobs and migration_info (last_error) for this VM.")  # fmt: skip
STALLED = ("A sync or cutover of web01 holds the migration but its heartbeat stopped: its process may be gone or"
           " stuck (the conversion host, vCenter or Cinder unreachable). migration_info names the owner.")  # fmt: skip
FAILING = ('xms_warm_migration_last_error{vm="web01"} and migration_info give the last error (a CBT reset, a snapshot'
           " vCenter refused, an unreachable datastore or volume: docs/events.md).")  # fmt: skip


def test_the_alert_rules_are_valid_and_fire_as_documented(tmp_path):
    """promtool checks docs/prometheus/alerts.yml, and its unit tests feed each alert the series a migration in
    that state writes: lagging, stalled, failing, and a stale report (and a paused migration does not lag)."""
    rules = Path(__file__).parents[5] / "docs" / "prometheus" / "alerts.yml"
    run = subprocess.run(["promtool", "check", "rules", str(rules)], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    written = {prometheus.PREFIX + name for name in prometheus.METRICS}
    assert set(re.findall(r"xms_warm_migration_\w+", rules.read_text())) <= written
    vm = 'vm="web01",migration_id="vm-web01",wave="wave1"'
    paused = 'vm="db01",migration_id="vm-db01",wave="wave1"'
    labels = {"vm": "web01", "migration_id": "vm-web01", "wave": "wave1"}
    tests = {"rule_files": [str(rules)], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": [
            {"series": f"xms_warm_migration_lag_seconds{{{vm}}}", "values": "3000+60x40"},
            {"series": f"xms_warm_migration_cadence_seconds{{{vm}}}", "values": "900x40"},
            {"series": f"xms_warm_migration_paused{{{vm}}}", "values": "0x40"},
            {"series": f"xms_warm_migration_lag_seconds{{{paused}}}", "values": "3000+60x40"},
            {"series": f"xms_warm_migration_cadence_seconds{{{paused}}}", "values": "900x40"},
            {"series": f"xms_warm_migration_paused{{{paused}}}", "values": "1x40"},
            {"series": f"xms_warm_migration_heartbeat_age_seconds{{{vm}}}", "values": "0+60x40"},
            {"series": f"xms_warm_migration_failed_syncs{{{vm}}}", "values": "0 1 2x38"},
            {"series": 'xms_warm_migration_report_timestamp_seconds{wave="wave1"}', "values": "0x40"},
        ],
        "alert_rule_test": [
            {"eval_time": "10m", "alertname": "XmsWarmMigrationLagging", "exp_alerts": []},
            {"eval_time": "20m", "alertname": "XmsWarmMigrationLagging", "exp_alerts": [{
                "exp_labels": {**labels, "severity": "warning"},
                "exp_annotations": {"summary": "web01 has not synced for 1h 10m 0s", "description": LAGGING}}]},
            {"eval_time": "8m", "alertname": "XmsWarmMigrationStalled", "exp_alerts": []},
            {"eval_time": "12m", "alertname": "XmsWarmMigrationStalled", "exp_alerts": [{
                "exp_labels": {**labels, "severity": "critical"},
                "exp_annotations": {"summary": "the run of web01 has not reported for 12m 0s",
                                    "description": STALLED}}]},
            {"eval_time": "1m", "alertname": "XmsWarmMigrationSyncsFailing", "exp_alerts": []},
            {"eval_time": "2m", "alertname": "XmsWarmMigrationSyncsFailing", "exp_alerts": [{
                "exp_labels": {**labels, "severity": "warning"},
                "exp_annotations": {"summary": "2 syncs of web01 failed in a row", "description": FAILING}}]},
            {"eval_time": "30m", "alertname": "XmsWarmMigrationReportStale", "exp_alerts": []},
        ],
    }]}  # fmt: skip
    path = tmp_path / "alerts_test.yml"
    path.write_text(json.dumps(tests))
    run = subprocess.run(["promtool", "test", "rules", str(path)], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
