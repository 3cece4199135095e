"""The wave playbooks as AWX/AAP runs them: ansible-runner, a private data directory, credentials injected
(preflight, seed, a seed job cancelled, a scheduled sync, cutover, rollback, report with a Pushgateway,
abandon).

AWX cannot run here; ansible-runner (what AWX's execution nodes run every job with) can. Each job gets
what AWX gives it: the inventory, the extra vars of the collection's two custom credential types rendered
as AWX renders them (tests/awx_injectors.py), and the job's events, where the playbooks' ``set_stats``
outcome per VM arrives as the stats event's ``artifact_data`` (what AWX shows as the job's artifacts and
hands to the next node of a workflow). The cloud credential is a Keystone application credential made
for the test, so the modules log in with ``auth_type: v3applicationcredential``; no clouds.yaml is read.
"""

import contextlib
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from datetime import timedelta

import ansible_runner
import openstack as sdk
import pytest
import yaml

from ansible_collections.xms.warm_migration.plugins.module_utils.migration import store
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.context import MigrationContext
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.errors import MigrationNotFoundError
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.initialize import (
    NetworkMapping,
    TargetSettings,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.record import Phase, utcnow
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack import volumes as os_volumes
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere import inventory
from ansible_collections.xms.warm_migration.tests.awx_injectors import credential_type, inject_extra_vars

from ..vsphere.conftest import VDDK_LIBDIR
from .conftest import assert_volumes_equal_source, reset_vm, start

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
COLLECTIONS = sys.modules["ansible_collections"].__path__[0].rsplit("/ansible_collections", 1)[0]
SEEDED = ("lab-vm-1", "lab-vm-2")  # seeded by the seed job, then one put in cutover, one held by another host
SEEDING = "lab-vm-events"  # its seed job cancelled while it copies: the seed runs on
DUE = "lab-vm-stuck"  # started, never synced: due, so the scheduled sync seeds it
UNFIT = "lab-vm-indep"  # an independent disk: its preflight fails
OTHER_HOST = "conv-2.example.com:4242:0123456789ab"


@pytest.fixture
def app_credential(openstack):
    """A Keystone application credential of the lab's project user (deleted after the test)."""
    conn = sdk.connect(cloud="xms-lab")
    secret = uuid.uuid4().hex
    made = conn.identity.create_application_credential(
        user=conn.current_user_id, name=f"xms-awx-{uuid.uuid4().hex[:8]}", secret=secret
    )
    yield {"id": made.id, "secret": secret, "auth_url": conn.auth["auth_url"]}
    conn.identity.delete_application_credential(user=conn.current_user_id, application_credential=made.id)


@pytest.fixture
def vms(vsphere, openstack):
    """The test's lab VMs by name, put back before and after; volumes the test lists in ``vms["kept"]`` (taken
    out of their migration, so no reset finds them) are deleted after the instances that used them."""
    found = {name: inventory.find_vm(vsphere, name=name) for name in (*SEEDED, SEEDING, DUE, UNFIT)}
    for vm in found.values():
        reset_vm(vsphere, vm, openstack)
    kept = []
    yield {**found, "kept": kept}
    for vm in found.values():
        reset_vm(vsphere, vm, openstack)
    os_volumes.delete_volumes(openstack, kept)


@pytest.fixture
def pushgateway(tmp_path):
    """A Prometheus Pushgateway (Debian's) on a free loopback port: its URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    gateway = subprocess.Popen(["prometheus-pushgateway", f"--web.listen-address=127.0.0.1:{port}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{url}/-/ready", timeout=2).close()
            break
        except OSError:
            assert time.monotonic() < deadline and gateway.poll() is None, "the Pushgateway did not start"
            time.sleep(0.2)
    yield url
    gateway.terminate()
    gateway.wait()


@pytest.fixture
def awx(lab, tmp_path, app_credential):
    """A runner of AWX-like jobs: ``job(playbook, wave)`` -> (status, {host: outcome}, events)."""
    # The data path is the inventory's: a launch prompt (an extra var) overrides it for one job.
    data_path = {"state_dir": str(tmp_path / "state"), "vddk_libdir": VDDK_LIBDIR}
    vcenter = inject_extra_vars(credential_type("warm_migration_vcenter"), {
        "hostname": lab["hostname"], "username": lab["username"], "password": lab["password"],
        "port": str(lab["port"]), "insecure": True,
    })  # fmt: skip
    cloud = inject_extra_vars(credential_type("warm_migration_cloud"), {
        "auth_url": app_credential["auth_url"], "auth_type": "v3applicationcredential",
        "application_credential_id": app_credential["id"],
        "application_credential_secret": app_credential["secret"], "region_name": "RegionOne",
    })  # fmt: skip
    data = tmp_path / "job"
    (data / "inventory").mkdir(parents=True)
    (data / "env").mkdir()
    host_vars = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    (data / "inventory" / "hosts.json").write_text(json.dumps({"all": {
        "vars": {**host_vars, "warm_migration_data_path": data_path, "warm_migration_volume_type": "standard-ssd",
                 "warm_migration_availability_zone": "az1",
                 "warm_migration_network_map": [{"source": "DC0_DVPG0", "network": "lab-net-a"}],
                 "warm_migration_serial": 1, "warm_migration_cadence": "15m", "cutover_conversion": {"skip": True},
                 "cutover_validation": {"enabled": False}, "seed_poll_interval": 1, "sync_poll_interval": 1,
                 "cutover_poll_interval": 1},
        "children": {
            "assess": {"hosts": {UNFIT: {}, SEEDED[0]: {}}},
            "seed_wave": {"hosts": {name: {} for name in SEEDED}},
            "slow": {"hosts": {SEEDING: {}}},
            "wave1": {"hosts": {name: {} for name in (SEEDING, *SEEDED, DUE)}},
            "cut": {"hosts": {SEEDED[1]: {}}},
            "back": {"hosts": {SEEDED[0]: {}}},
            "dropped": {"hosts": {name: {} for name in SEEDED}},
        },
    }}))  # fmt: skip
    extravars = {**vcenter, **cloud}
    # AWX writes the injected extra vars as YAML to a read-only file of the job's private data directory.
    (data / "env" / "extravars").write_text(yaml.safe_dump(extravars))
    (data / "env" / "extravars").chmod(0o400)
    env = {"ANSIBLE_COLLECTIONS_PATH": COLLECTIONS, "ANSIBLE_LOCALHOST_WARNING": "false",
           # Nothing but the credential may name the cloud: no clouds.yaml, no OS_* variable.
           "OS_CLIENT_CONFIG_FILE": str(tmp_path / "no-clouds.yaml")}  # fmt: skip
    (data / "env" / "envvars").write_text(yaml.safe_dump(env))

    def job(playbook: str, wave: str, *options: str, cancel_when=lambda: False, data_path=None, **extra):
        """Run a job as AWX does: ``cancel_when`` is polled as AWX's cancel button would be pressed;
        ``data_path`` replaces the data path's extra var for this job, as a launch prompt would."""
        more = ["-e", shlex.quote(json.dumps({"warm_migration_data_path": data_path}))] if data_path else []
        run = ansible_runner.run(
            private_data_dir=str(data), playbook=os.path.join(ROOT, "playbooks", f"{playbook}.yml"),
            cmdline=" ".join([*options, *more, *(f"-e {k}={v}" for k, v in {"wave": wave, **extra}.items())]),
            cancel_callback=cancel_when, quiet=True,
        )  # fmt: skip
        events = list(run.events)
        stats = next((e["event_data"] for e in events if e["event"] == "playbook_on_stats"), {})
        artifacts = os.path.join(data, "artifacts", run.config.ident)
        for root, _dirs, files in os.walk(artifacts):
            for name in files:
                with open(os.path.join(root, name), errors="replace") as handle:
                    assert lab["password"] not in handle.read(), f"the vCenter password is in {name}"
                    handle.seek(0)
                    assert app_credential["secret"] not in handle.read(), f"the cloud's secret is in {name}"
        return run.status, stats.get("artifact_data", {}).get("warm_migration_outcomes", {}), events

    job.data_path = data_path
    return job


def test_awx_jobs_assess_seed_sync_on_schedule_past_busy_vms_cut_over_roll_back_and_abandon(
    vsphere, openstack, vms, awx, pushgateway, tmp_path
):
    # Preflight, one VM a batch: the first batch fails completely (an independent disk), the next is still assessed.
    status, outcomes, _events = awx("preflight", "assess")
    assert status == "failed"
    assert outcomes[UNFIT]["verdict"] == "fail" and "independent" in outcomes[UNFIT]["reasons"][0], outcomes
    assert outcomes[SEEDED[0]]["verdict"] in ("pass", "warn"), outcomes

    status, outcomes, _events = awx("seed", "seed_wave")
    assert status == "successful", outcomes
    assert {vm: (o["outcome"], o["kind"], o["phase"]) for vm, o in outcomes.items()} == {
        vm: ("done", "seed", "ready") for vm in SEEDED
    }

    # A seed whose AWX job is cancelled once it copies: the module runs on to its end on the conversion host
    # (an async job), holding the migration, as after a job template's timeout.
    seeding = MigrationContext.read(vsphere, vms[SEEDING]).migration_id

    def copying():
        with contextlib.suppress(MigrationNotFoundError):
            state = store.load(openstack, seeding)
            return bool(state.owner) and state.progress_done > 0
        return False

    status, _outcomes, _events = awx("seed", "slow", cancel_when=copying,
                                     data_path={**awx.data_path, "bandwidth_limit": 512 << 10})  # fmt: skip
    assert status == "canceled"

    # The wave as a 15-minute schedule finds it: that VM still seeding, one in cutover, one another
    # conversion host holds, and one started but never synced.
    target = TargetSettings(volume_type="standard-ssd", availability_zone="az1", cadence="15m",
                            network_map=[NetworkMapping(source="DC0_DVPG0", network="lab-net-a")])  # fmt: skip
    start(vsphere, vms[DUE], openstack, target)
    in_cutover = store.load(openstack, MigrationContext.read(vsphere, vms[SEEDED[0]]).migration_id)
    in_cutover.phase = Phase.CUTOVER
    store.save_common(openstack, in_cutover)
    held = store.load(openstack, MigrationContext.read(vsphere, vms[SEEDED[1]]).migration_id)
    # Due (its last sync 20 minutes ago), which is why the other host is syncing it.
    held.owner, held.heartbeat, held.synced_at = OTHER_HOST, utcnow(), utcnow() - timedelta(minutes=20)
    store.save_common(openstack, held)
    status, outcomes, _events = awx("sync", "wave1", sync_only_when_due="true")
    assert status == "successful", outcomes
    summary = {vm: (o["outcome"], o["reason"]) for vm, o in outcomes.items()}
    assert summary[SEEDED[0]] == ("skipped", "in cutover"), summary
    assert summary[SEEDED[1]][0] == "skipped" and OTHER_HOST in summary[SEEDED[1]][1], summary
    assert summary[SEEDING][0] == "skipped" and "running on this host" in summary[SEEDING][1], summary
    assert outcomes[DUE]["outcome"] == "done" and outcomes[DUE]["kind"] == "seed", outcomes
    assert_volumes_equal_source(vsphere, vms[DUE], openstack, store.load(
        openstack, MigrationContext.read(vsphere, vms[DUE]).migration_id))  # fmt: skip
    deadline = time.monotonic() + 300  # the cancelled job's seed ends on its own, and is whole
    while (state := store.load(openstack, seeding)).owner or not state.seeded:
        assert time.monotonic() < deadline, f"the seed of {SEEDING} did not end: {state.metrics()}"
        time.sleep(2)
    assert state.phase is Phase.READY and not state.last_error, state.metrics()
    assert_volumes_equal_source(vsphere, vms[SEEDING], openstack, state)

    # The other host finished: the cutover job reports the downtime and the instance for the workflow.
    held.owner, held.heartbeat = "", None
    store.save_common(openstack, held)
    status, outcomes, _events = awx("cutover", "cut")
    assert status == "successful", outcomes
    cut = outcomes[SEEDED[1]]
    assert (cut["outcome"], cut["phase"], cut["validated"]) == ("done", "completed", False), cut
    assert int(cut["downtime_seconds"]) >= 0 and len(cut["instance"]) == 36, cut

    # The VM left in cutover goes back to its source, as the rollback job template does it.
    status, outcomes, _events = awx("rollback", "back")
    assert status == "successful", outcomes
    back = outcomes[SEEDED[0]]
    assert (back["outcome"], back["phase"]) == ("done", "ready") and "power_on_source" in back["steps"], back
    assert store.load(openstack, in_cutover.migration_id).phase is Phase.READY

    # The report job: its container's files go with it, so the metrics go to a Pushgateway too.
    status, _outcomes, _events = awx("report", "dropped", report_path=str(tmp_path / "report.html"),
                                     report_metrics_path=str(tmp_path / "wave.prom"),
                                     report_pushgateway_url=pushgateway)  # fmt: skip
    assert status == "successful"
    pushed = urllib.request.urlopen(f"{pushgateway}/metrics", timeout=10).read().decode()
    assert re.search(r'xms_warm_migration_phase\{[^}]*phase="completed",vm="lab-vm-2",wave="dropped"\} 1', pushed), (
        pushed[-3000:]
    )

    # Both dropped from the wave: check mode lists what would go; the completed one is refused, naming
    # keep_volumes, and the other loses its volumes (its batch does not stop the next).
    replicas = [d.volume_id for d in store.load(openstack, in_cutover.migration_id).disks]
    status, outcomes, _events = awx("abandon", "dropped", "--check")
    assert status == "failed" and sorted(outcomes[SEEDED[0]]["deleted_volumes"]) == sorted(replicas), outcomes
    assert "keep_volumes" in outcomes[SEEDED[1]]["error"], outcomes
    assert [d.volume_id for d in store.load(openstack, in_cutover.migration_id).disks] == replicas
    status, outcomes, _events = awx("abandon", "dropped")
    assert outcomes[SEEDED[0]]["outcome"] == "done" and "keep_volumes" in outcomes[SEEDED[1]]["error"], outcomes
    assert os_volumes.find_volumes(openstack, in_cutover.migration_id) == []
    assert all(openstack.conn.block_storage.find_volume(v, ignore_missing=True) is None for v in replicas)
    kept = vms["kept"]
    kept.extend(v.id for v in os_volumes.find_volumes(openstack, held.migration_id))
    status, outcomes, _events = awx("abandon", "cut", seed_abandon_keep_volumes="true")
    assert status == "successful" and sorted(outcomes[SEEDED[1]]["released_volumes"]) == sorted(kept), outcomes
    assert os_volumes.find_volumes(openstack, held.migration_id) == []
    assert all(openstack.conn.block_storage.find_volume(v).status == "in-use" for v in kept)  # the instance's disks
