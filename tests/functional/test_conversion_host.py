"""The conversion_host role on this machine: it prepares a conversion host from bindep.txt and requirements.txt,
checks it (libguestfs's appliance booted once), changes nothing the second time, and nothing in check mode.

This machine has every package bindep.txt lists for a conversion host (the set-up installed them), so the
package task must find nothing to do; the Python environment and the state directory are the test's own."""

import json
import os
import re
import subprocess
import sys

from .vsphere.conftest import VDDK_LIBDIR

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLLECTIONS = sys.modules["ansible_collections"].__path__[0].rsplit("/ansible_collections", 1)[0]


def test_the_role_prepares_and_checks_a_conversion_host_idempotently_and_check_mode_changes_nothing(tmp_path):
    inventory = {"conversion_hosts": {"hosts": {"conv": {
        "ansible_connection": "local", "ansible_python_interpreter": "/usr/bin/python3",
        "conversion_host_venv": str(tmp_path / "xms" / "venv"), "conversion_host_protocols": ["nfs"],
        "warm_migration_data_path": {"state_dir": str(tmp_path / "state"),
                                     "vddk_libdir": VDDK_LIBDIR},
    }}}}  # fmt: skip
    (tmp_path / "inventory.json").write_text(json.dumps(inventory))
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": COLLECTIONS, "ANSIBLE_LOCALHOST_WARNING": "false"}

    def play(*extra):
        argv = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"),
                "-i", str(tmp_path / "inventory.json"), *extra,
                os.path.join(ROOT, "playbooks", "conversion_hosts.yml")]  # fmt: skip
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
        return int(re.search(r"conv\s+: ok=\d+\s+changed=(\d+)", done.stdout).group(1)), done.stdout

    changed, out = play()
    assert changed > 0 and "the appliance booted in" in out and "VDDK 8.0.3" in out, out[-3000:]
    assert oct(os.stat(tmp_path / "state").st_mode & 0o777) == "0o700"
    assert os.path.exists(tmp_path / "xms" / "venv" / "bin" / "python")
    changed, out = play("-e", "conversion_host_libguestfs_test=false")
    assert changed == 0, out[-3000:]
    changed, out = play("--check", "-e", "conversion_host_libguestfs_test=false")
    assert changed == 0, out[-3000:]
