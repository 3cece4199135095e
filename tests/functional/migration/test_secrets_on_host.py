"""The vCenter password and the conversion host's disk, through the collection's own playbooks and roles.

Every role runs its module under ``async``, which turns pipelining off: Ansible writes the module with its
arguments into the host's remote temp and keeps it there for the whole job. With ``password`` in
``warm_migration_vcenter`` that file holds the password (shown here first, with Ansible told to keep
its remote files, so the search below can be trusted); with ``password_file`` (a 0600 file the host
holds) no file Ansible or the collection writes holds it, neither on the host nor in the async job
status files.
"""

import json
import os
import subprocess
import sys

from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere import inventory

from ..openstack.conftest import CLOUDS
from ..vsphere.conftest import VDDK_LIBDIR
from .conftest import reset_vm
from .test_modules import files_holding

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
COLLECTIONS = sys.modules["ansible_collections"].__path__[0].rsplit("/ansible_collections", 1)[0]
VM = "lab-vm-2"


def run(tmp_path, lab, vcenter: dict, playbook: str, secrets: str) -> str:
    """``playbooks/<playbook>.yml`` on VM, its conversion host this machine; Ansible keeps its remote files."""
    inventory_doc = {"all": {
        "vars": {"warm_migration_vcenter": vcenter, "warm_migration_cloud": {"cloud": "xms-lab"},
                 "warm_migration_data_path": {"state_dir": str(tmp_path / "state"), "vddk_libdir": VDDK_LIBDIR},
                 "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                 "warm_migration_volume_type": "standard-ssd", "warm_migration_availability_zone": "az1",
                 "warm_migration_network_map": [{"source": "DC0_DVPG0", "network": "lab-net-a"}]},
        "children": {"vms": {"hosts": {VM: {}}}},
    }}  # fmt: skip
    path = tmp_path / "inventory.json"
    path.write_text(json.dumps(inventory_doc))
    where = {"ANSIBLE_REMOTE_TEMP": tmp_path / "remote", "ANSIBLE_LOCAL_TEMP": tmp_path / "local",
             "ANSIBLE_ASYNC_DIR": tmp_path / "async", "TMPDIR": tmp_path / "tmp"}  # fmt: skip
    for directory in where.values():
        directory.mkdir(exist_ok=True)
    env = {**os.environ, **{k: str(v) for k, v in where.items()}, "ANSIBLE_KEEP_REMOTE_FILES": "1",
           "ANSIBLE_COLLECTIONS_PATH": COLLECTIONS, "OS_CLIENT_CONFIG_FILE": CLOUDS,
           "ANSIBLE_LOCALHOST_WARNING": "false"}  # fmt: skip
    argv = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", str(path),
            "-e", f"@{secrets}", os.path.join(ROOT, "playbooks", f"{playbook}.yml")]  # fmt: skip
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    return done.stdout


def test_with_a_password_file_no_file_on_the_conversion_host_holds_the_vcenter_password(
    vsphere, openstack, lab, tmp_path
):
    vm = inventory.find_vm(vsphere, name=VM)
    reset_vm(vsphere, vm, openstack)
    secrets = tmp_path / "secrets.json"  # the controller's vault: extra vars, never on the host
    secrets.write_text(json.dumps({"vcenter_password": lab["password"]}))
    secrets.chmod(0o600)
    (tmp_path / "host").mkdir()
    password_file = tmp_path / "host" / "vcenter.password"  # what the operator puts on each conversion host
    password_file.write_text(lab["password"] + "\n")
    password_file.chmod(0o600)
    common = {
        "hostname": lab["hostname"],
        "port": lab["port"],
        "username": lab["username"],
        "vcenter_validate_certs": False,
    }
    kept = [tmp_path / d for d in ("remote", "local", "async", "tmp", "state")]
    try:
        run(tmp_path, lab, {**common, "password": "{{ vcenter_password }}"}, "seed", secrets)
        run(tmp_path, lab, {**common, "password": "{{ vcenter_password }}"}, "sync", secrets)
        assert files_holding(lab["password"], *kept), "the search finds nothing even where Ansible put it"
        for directory in kept:
            subprocess.run(["rm", "-rf", str(directory)], check=True)
        out = run(tmp_path, lab, {**common, "password_file": str(password_file)}, "sync", secrets)
        assert lab["password"] not in out
        assert any((tmp_path / "remote").rglob("AnsiballZ_*")), "Ansible kept no remote file: the search means nothing"
        assert files_holding(lab["password"], *kept) == []
    finally:
        reset_vm(vsphere, vm, openstack)
