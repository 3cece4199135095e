"""The modules through ansible-playbook, against the labs (see playbooks/modules.yml)."""

import json
import os
import signal
import subprocess
import sys
import time

from ansible_collections.xms.warm_migration.plugins.module_utils.migration import store
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.context import MigrationContext
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere import inventory

from ..vsphere.conftest import VDDK_LIBDIR
from .conftest import assert_volumes_equal_source, reset_vm

HERE = os.path.dirname(os.path.abspath(__file__))


def playbook_run(lab, tmp_path, playbook):
    """The argv and environment of ``ansible-playbook playbooks/<playbook>`` against the labs.

    The vCenter connection goes in a 0600 file, never on the command line."""
    vcenter = tmp_path / "vcenter.json"
    vcenter.write_text(json.dumps({k: lab[k] for k in ("hostname", "port", "username", "password")}))
    vcenter.chmod(0o600)
    collections = sys.modules["ansible_collections"].__path__[0].rsplit("/ansible_collections", 1)[0]
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": collections, "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
           "ANSIBLE_LOCALHOST_WARNING": "false", "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false"}  # fmt: skip
    book = os.path.join(HERE, "playbooks", playbook)
    argv = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), book,
            "-e", f"vcenter_file={vcenter}", "-e", f"state_dir={tmp_path / 'state'}",
            "-e", f"vddk_libdir={VDDK_LIBDIR}"]  # fmt: skip
    return argv, env


def test_the_modules_predict_change_and_then_settle(vsphere, openstack, lab, tmp_path):
    vm = inventory.find_vm(vsphere, name="lab-vm-1")
    reset_vm(vsphere, vm, openstack)
    try:
        argv, env = playbook_run(lab, tmp_path, "modules.yml")
        run = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
        assert lab["password"] not in run.stdout + run.stderr
    finally:
        reset_vm(vsphere, vm, openstack)


def test_a_second_block_sync_of_the_same_migration_refuses_while_the_first_runs(vsphere, openstack, lab, tmp_path):
    """Two ansible-playbook runs at once, as two overlapping schedules would start them."""
    vm = inventory.find_vm(vsphere, name="lab-vm-2")
    reset_vm(vsphere, vm, openstack)
    argv, env = playbook_run(lab, tmp_path, "racing_sync.yml")
    try:
        init = subprocess.run([*argv, "-e", "step=init"], env=env, capture_output=True, text=True, check=False)
        assert init.returncode == 0, init.stdout[-3000:]
        # 20 MiB to seed at 2 MiB/s: the first sync runs for about ten seconds.
        first = subprocess.Popen([*argv, "-e", "step=sync", "-e", "rate=2097152"], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
        progress = tmp_path / "state"
        while first.poll() is None and not any(progress.glob("*.lock")):
            time.sleep(0.2)
        second = subprocess.run([*argv, "-e", "step=sync"], env=env, capture_output=True, text=True, check=False)
        out = first.communicate(timeout=600)[0]
        assert first.returncode == 0, out[-3000:]
        assert second.returncode != 0
        assert "is running" in second.stdout or "is held by" in second.stdout, second.stdout[-3000:]
        assert "Traceback" not in second.stdout + second.stderr
    finally:
        reset_vm(vsphere, vm, openstack)


def files_holding(secret: str, *tops) -> list:
    """Regular files under ``tops`` whose bytes contain ``secret``."""
    found = []
    for top in tops:
        for base, _dirs, files in os.walk(top):
            for name in files:
                path = os.path.join(base, name)
                if os.path.isfile(path) and not os.path.islink(path):
                    with open(path, "rb") as handle:
                        if secret.encode() in handle.read():
                            found.append(path)
    return found


def test_a_block_sync_killed_mid_way_is_completed_by_the_next_run(vsphere, openstack, lab, tmp_path):
    """SIGKILL to the module mid-seed and to its playbook run (a crash of the conversion host); the rerun resumes.

    The kill leaves no secret behind: nbdkit got the vCenter password through a pipe, and with
    pipelining (docs/inventory.md) Ansible hands the module its arguments on stdin, not in a file."""
    vm = inventory.find_vm(vsphere, name="lab-vm-2")
    reset_vm(vsphere, vm, openstack)
    argv, env = playbook_run(lab, tmp_path, "racing_sync.yml")
    (tmp_path / "tmp").mkdir()
    scratch = str(tmp_path / "tmp")  # where the sync, Ansible on the controller and on the host keep files
    env.update(TMPDIR=scratch, ANSIBLE_PIPELINING="true", ANSIBLE_LOCAL_TEMP=scratch, ANSIBLE_REMOTE_TEMP=scratch)
    try:
        assert subprocess.run([*argv, "-e", "step=init"], env=env, capture_output=True, check=False).returncode == 0
        doomed = subprocess.Popen([*argv, "-e", "step=sync", "-e", "rate=1048576"], env=env, start_new_session=True,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        migration_id = MigrationContext.read(vsphere, vm).migration_id
        while doomed.poll() is None and store.load(openstack, migration_id).progress_done == 0:
            time.sleep(0.2)
        # The module runs outside the playbook's process group: kill the holder of the host lock itself.
        holder = (tmp_path / "state" / f"{migration_id}.lock").read_text().split(":")[1]  # host:pid:boot
        os.kill(int(holder), signal.SIGKILL)
        os.killpg(doomed.pid, signal.SIGKILL)
        doomed.wait()
        state = store.load(openstack, migration_id)
        assert not state.seeded and state.sync_count == 0  # killed before the seed finished
        assert any((tmp_path / "tmp").glob("xms-reader-*")), "the killed sync's reader work directory is not here"
        assert files_holding(lab["password"], tmp_path / "tmp", tmp_path / "state") == []

        rerun = subprocess.run([*argv, "-e", "step=sync"], env=env, capture_output=True, text=True, check=False)
        assert rerun.returncode == 0, rerun.stdout[-3000:]
        state = store.load(openstack, migration_id)
        assert state.seeded and state.sync_count == 1
        assert_volumes_equal_source(vsphere, vm, openstack, state)
    finally:
        reset_vm(vsphere, vm, openstack)
