"""The modules through ansible-playbook, against the labs (see playbooks/modules.yml)."""

import json
import os
import subprocess
import sys

from ansible_collections.xms.warm_migration.plugins.module_utils.migration.initialize import migration_id_for
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack import volumes as os_volumes
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere import inventory

HERE = os.path.dirname(os.path.abspath(__file__))


def test_the_modules_predict_change_and_then_settle(vsphere, openstack, lab, tmp_path):
    vm = inventory.find_vm(vsphere, name="lab-vm-1")
    migration_id = migration_id_for(inventory.inventory(vsphere, vm))
    os_volumes.delete_migration(openstack, migration_id)
    vcenter = tmp_path / "vcenter.json"
    vcenter.write_text(json.dumps({k: lab[k] for k in ("hostname", "port", "username", "password")}))
    vcenter.chmod(0o600)
    collections = sys.modules["ansible_collections"].__path__[0].rsplit("/ansible_collections", 1)[0]
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": collections, "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
           "ANSIBLE_LOCALHOST_WARNING": "false", "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false"}  # fmt: skip
    try:
        playbook = os.path.join(HERE, "playbooks", "modules.yml")
        argv = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), playbook,
                "-e", f"vcenter_file={vcenter}", "-e", f"state_dir={tmp_path / 'state'}"]  # fmt: skip
        run = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
        assert lab["password"] not in run.stdout + run.stderr
    finally:
        os_volumes.delete_migration(openstack, migration_id)
