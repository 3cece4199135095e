"""Records a person or a tool made by hand: reported, never counted, never rendered raw; the rest still listed."""

import os
import subprocess
import sys

from ansible_collections.xms.warm_migration.plugins.module_utils.migration import store
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack import volumes as os_volumes

from .conftest import start
from .test_modules import playbook_run

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
SCRIPT = "<script>alert('xms')</script>"


def test_hand_made_and_copied_records_are_reported_escaped_and_the_others_listed(
    vsphere, source, openstack, target, lab, tmp_path
):
    migration_id = start(vsphere, source, openstack, target).migration_id
    real = os_volumes.find_volumes(openstack, migration_id)
    storage = openstack.conn.block_storage
    hand_made = storage.create_volume(size=1, name="xms-test-hand-made", metadata={
        "xms_migration_id": "vm-hand-made", "xms_disk_key": "2000", "xms_revision": "many"})  # fmt: skip
    copied = storage.create_volume(size=1, name="xms-test-copy",
                                   metadata={f"xms_{k}": v for k, v in real[0].record.items()})  # fmt: skip
    try:
        for volume in real:  # any member of the project may edit the metadata
            os_volumes.update_record(openstack, volume.id, {"vm_name": SCRIPT})
        states, malformed = store.list_all(openstack)
        assert len(states[migration_id].disks) == 2  # the copy is no disk of it
        reasons = {m.volume_ids[0]: m.reason for m in malformed}
        assert "copied from volume" in reasons[copied.id] and "does not parse" in reasons[hand_made.id]

        argv, env = playbook_run(lab, tmp_path, "modules.yml")
        report = tmp_path / "report.html"
        run = subprocess.run(
            [argv[0], os.path.join(ROOT, "playbooks", "report.yml"), "-i", "localhost,", "-c", "local",
             "-e", "wave=localhost", "-e", f"report_path={report}",
             "-e", f"ansible_python_interpreter={sys.executable}",
             "-e", '{"warm_migration_cloud": {"cloud": "xms-lab"}}'],
            env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert run.returncode == 0, run.stdout[-3000:]
        html = report.read_text()
        assert SCRIPT not in html and "&lt;script&gt;" in html
        assert hand_made.id in html and copied.id in html
    finally:
        os_volumes.delete_volumes(openstack, [hand_made.id, copied.id])
