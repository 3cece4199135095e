"""The bodies of the report modules: check where the files go, gather what they show, write them."""

from __future__ import annotations

import os
from typing import Any, Dict, Mapping

from ansible_collections.xms.warm_migration.plugins.module_utils.migration import params as mparams
from ansible_collections.xms.warm_migration.plugins.module_utils.migration import store
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.errors import PreflightError
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.record import utcnow
from ansible_collections.xms.warm_migration.plugins.module_utils.report import assessment, page, prometheus
from ansible_collections.xms.warm_migration.plugins.module_utils.report.wave import (
    WaveReport,
    WaveVM,
    select,
    table_lines,
    write_atomically,
)


def _check_destination(path: str, parameter: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise PreflightError(f"the directory of '{path}' does not exist", parameter=parameter,
                             hint="Create it first, or choose another path")  # fmt: skip
    if not os.access(directory, os.W_OK):
        raise PreflightError(f"'{directory}' is not writable by this user", parameter=parameter,
                             hint="Choose a directory this user can write, or become a user who can")  # fmt: skip


def write_report(params: Mapping[str, Any], *, check_mode: bool) -> Dict[str, Any]:
    """Everything is checked before the cloud is asked; nothing is written in check mode."""
    _check_destination(params["path"], "path")
    metrics_path = params.get("metrics_path")
    if metrics_path:
        if not metrics_path.endswith(".prom"):
            raise PreflightError(f"'{metrics_path}' does not end in .prom: node_exporter's textfile collector "
                                 "reads only such files", parameter="metrics_path",
                                 hint="Name it <wave>.prom")  # fmt: skip
        _check_destination(metrics_path, "metrics_path")
    vms = [WaveVM(name=vm["name"], uuid=vm.get("uuid") or "") for vm in params.get("vms") or []]
    states, malformed = store.list_all(mparams.connect_openstack(params))
    chosen, missing = select(list(states.values()), vms)
    report = WaveReport(title=params["title"], wave=params["wave"], made_at=utcnow(), migrations=chosen,
                        missing=missing, malformed=malformed)  # fmt: skip
    if not check_mode:
        write_atomically(params["path"], page.render(report))
        if metrics_path:
            write_atomically(metrics_path, prometheus.render(report))
    return {
        "changed": True,  # the page is made anew each time (its time, the lags): in check mode, it would be
        "path": params["path"],
        "metrics_path": metrics_path or None,
        "table": table_lines(report),
        "missing": missing,
        "migrations": [s.metrics(report.made_at) for s in chosen],
    }


def write_assessment(params: Mapping[str, Any], *, check_mode: bool) -> Dict[str, Any]:
    """The assessment_report module: both destinations are checked before either file is written."""
    _check_destination(params["path"], "path")
    if params.get("csv_path"):
        _check_destination(params["csv_path"], "csv_path")
    vms = [assessment.AssessedVM(name=v["name"], verdict=v["verdict"], reasons=list(v.get("reasons") or []),
                                 vm=v.get("vm") or {}) for v in params["vms"]]  # fmt: skip
    if not check_mode:
        write_atomically(params["path"], assessment.render_html(params["title"], utcnow(), vms))
        if params.get("csv_path"):
            write_atomically(params["csv_path"], assessment.render_csv(vms))
    return {
        "changed": True,  # made anew each time (its time): in check mode, it would be
        "path": params["path"],
        "csv_path": params.get("csv_path") or None,
        "verdicts": assessment.verdict_counts(vms),
        "disks_total_bytes": assessment.disks_total_bytes(vms),
    }
