"""Projected against measured downtime, on the labs, for several guest write rates.

For each rate: lab-vm-1 is reset and initialized; a writer changes its first disk at the rate
through the lab's live export (as a running guest does, from before the seed until the cutover
powers it off); the seed and two incrementals measure the change rate; after a minute's pause
the cutover runs (conversion skipped: the lab VM holds test data) with no budget. The projection
it started from is compared with the downtime it measured (guest down to instance ACTIVE), the
yardstick of the same run.
Two cutovers first measure this host's shutdown and instance times, as a real host's earlier
cutovers would have. Syncs are capped at 4 MB/s, so that the final delta, not the lab's few
seconds of instance step, makes most of the downtime, as on a real link. A last case cuts over
the fastest writer with a budget of BUDGET_S, less than its minute of changes takes: back-to-back
syncs must make it fit.

    XMS_LAB_DIR=/var/lib/xms-lab .venv/bin/python bench/downtime_bench.py [RATE_MB_S ...]

Prints one JSON object per case: ``ratio`` is projected / measured (goal 0.75-1.25); the budget
case adds the syncs it took and whether the measured downtime fitted the budget.
"""

import json
import os
import sys
import tempfile
import threading
import time

from checkout import ROOT

sys.path.insert(0, os.path.join(ROOT, "lab", "demo"))
LAB = os.environ.get("XMS_LAB_DIR", "/var/lib/xms-lab")
VDDK_LIBDIR = os.path.join(LAB, "vsphere", "vddk")  # the lab's VDDK
CBT = os.path.join(ROOT, "lab", "vsphere", "cbt.py")
BLOCK = 256 << 10
VM = "lab-vm-1"
BUDGET_S = 15

import subprocess  # noqa: E402

from lab_reset import power_state, reset_vm  # noqa: E402

from ansible_collections.xms.warm_migration.plugins.module_utils.conversion.virt_v2v import (  # noqa: E402
    ConversionOptions,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.migration import store  # noqa: E402
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.context import MigrationContext  # noqa: E402
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.cutover import (  # noqa: E402
    CutoverSettings,
    run_cutover,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.initialize import (  # noqa: E402
    NetworkMapping,
    TargetSettings,
    initialize,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.settings import SyncSettings  # noqa: E402
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.sync import run_sync  # noqa: E402
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.validation import (  # noqa: E402
    ValidationSettings,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack.client import (  # noqa: E402
    OpenStackClient,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere import inventory  # noqa: E402
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere.client import (  # noqa: E402
    VSphereClient,
    VSphereConnection,
)


def writer(vsphere, vm, key, rate, stop):
    """BLOCK-sized writes at ``rate`` bytes/s until ``stop`` is set or the guest is powered off."""
    period, next_at = BLOCK / rate, time.monotonic()
    while not stop.is_set():
        if power_state(vsphere, vm) != "poweredOn":
            return
        subprocess.run([sys.executable, CBT, "write", VM, key, "1", str(BLOCK)], check=True, capture_output=True)
        next_at += period
        stop.wait(max(0.0, next_at - time.monotonic()))


def one_round(vsphere, openstack, settings, rate, pause=60, budget=None):
    vm = inventory.find_vm(vsphere, name=VM)
    reset_vm(vsphere, vm, openstack)
    target = TargetSettings(volume_type="standard-ssd", availability_zone="az1",
                            network_map=[NetworkMapping(source="DC0_DVPG0", network="lab-net-a")])  # fmt: skip
    migration_id = initialize(
        MigrationContext.read(vsphere, vm, openstack), target, vddk_libdir=VDDK_LIBDIR
    ).migration_id
    key = str(store.load(openstack, migration_id).disks[0].disk_key)
    stop = threading.Event()
    # The guest writes from before the seed's snapshot on, as a running one does: the first incremental's
    # interval (from the seed's snapshot) holds writes throughout, and the change rate measured is the writer's.
    thread = threading.Thread(target=writer, args=(vsphere, vm, key, rate, stop), daemon=True)
    thread.start()
    try:
        run_sync(MigrationContext.read(vsphere, vm, openstack), settings)
        for _measure in range(2):
            time.sleep(10)
            run_sync(MigrationContext.read(vsphere, vm, openstack), settings)
        time.sleep(pause)
        # the bench VMs hold test data, no guest: nothing to convert, nothing to answer in the cloud
        cutover = CutoverSettings(sync=settings, conversion=ConversionOptions(skip=True), instance_timeout=600,
                                  validation=ValidationSettings(enabled=False), downtime_budget=budget)  # fmt: skip
        outcome = run_cutover(MigrationContext.read(vsphere, vm, openstack), target, cutover)
    finally:
        stop.set()
        thread.join()
    reset_vm(vsphere, vm, openstack)
    return outcome


def result(case, outcome):
    """Projected against measured downtime of one cutover, with the final sync's share of each."""
    projected = outcome.projection or {}
    measured = outcome.downtime_s or 0
    return {
        "case": case,
        "projected_s": projected.get("downtime_s"),
        "measured_s": measured,
        "ratio": round(projected.get("downtime_s", 0) / measured, 2) if measured else None,
        "final_sync_projected_s": projected.get("final_sync_s"),
        "final_sync_measured_s": (outcome.timings or {}).get("final_sync"),
        # The final sync's parts: its bytes against the projected delta, and its own run against the step's time
        # (the rest is the cutover's work around the sync: the source's power state, the record).
        "final_delta_projected_MB": round((projected.get("final_delta_bytes") or 0) / 1e6, 1),
        "final_delta_measured_MB": round((outcome.final_sync or {}).get("bytes", 0) / 1e6, 1),
        "final_sync_run_s": round((outcome.final_sync or {}).get("duration_seconds", 0), 1),
        "instance_projected_s": projected.get("instance_s"),
        "instance_measured_s": (outcome.timings or {}).get("instance"),
        "change_rate_MBps_estimated": round((projected.get("change_rate") or 0) / 1e6, 2),
    }


def main() -> int:
    rates = [float(r) * 1e6 for r in sys.argv[1:]] or [0.5e6, 1e6, 2e6]
    with open(os.path.join(LAB, "vsphere", "lab.json")) as handle:
        lab = json.load(handle)
    os.environ["OS_CLIENT_CONFIG_FILE"] = os.path.join(LAB, "openstack", "clouds.yaml")
    openstack = OpenStackClient.connect(cloud="xms-lab")
    connection = VSphereConnection(hostname=lab["hostname"], port=lab["port"], username=lab["username"],
                                   password=lab["password"], validate_certs=False)  # fmt: skip
    settings = SyncSettings(state_dir=tempfile.mkdtemp(prefix="xms-bench-"), bandwidth_limit=4_000_000,
                            vddk_libdir=VDDK_LIBDIR)  # fmt: skip
    with VSphereClient.connect(connection) as vsphere:
        for _warm_up in range(2):  # this host's shutdown and instance times, as its earlier cutovers would
            one_round(vsphere, openstack, settings, rates[0])
        for rate in rates:
            outcome = one_round(vsphere, openstack, settings, rate)
            print(json.dumps(result(f"downtime_at_{rate / 1e6:g}MBps_writes", outcome)), flush=True)
        # A minute of the fastest writer's changes does not fit BUDGET_S: back-to-back syncs must make it fit.
        outcome = one_round(vsphere, openstack, settings, rates[-1], budget=BUDGET_S)
        print(json.dumps({**result(f"budget_{BUDGET_S}s_at_{rates[-1] / 1e6:g}MBps_writes", outcome),
                          "budget_s": BUDGET_S, "convergence_syncs": outcome.convergence_syncs,
                          "fits_budget": (outcome.downtime_s or 0) <= BUDGET_S}), flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
