"""End to end: the demo's wave of two VMs with two disks each, through the collection's playbooks;
lab-vm-2 lands on the encrypted volume type.

Writers change the source disks during the seed and two incrementals; the
cutover shuts the VMs down first; the demo then compares every volume with
its source disk (SHA-256) and exits non-zero on any difference. (The lab guest
with conversion and boot check is covered by tests/functional/migration/test_cutover.py;
the README's demo adds it to the wave.)
"""

import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
LAB_DIR = os.environ.get("XMS_LAB_DIR", "/var/lib/xms-lab")


def test_a_wave_of_two_vms_migrates_warm_and_ends_byte_identical():
    demo = os.path.join(ROOT, "lab", "demo", "warm_migration.py")
    run = subprocess.run([sys.executable, demo, "--wave", "lab-vm-1,lab-vm-2", "--incrementals", "2"],
                         capture_output=True, text=True, check=False)  # fmt: skip
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    out = run.stdout
    assert "every volume matches its source" in out
    assert len(re.findall(r"^lab-vm-[12]\s+\S+.*identical$", out, re.M)) == 4  # 2 VMs x 2 disks
    # lab-vm-2 is on the encrypted volume type: compared as plaintext, decrypted with Barbican's key
    assert len(re.findall(r"^lab-vm-2\s+\S+.*encrypted at rest, plaintext identical$", out, re.M)) == 2
    assert len(re.findall(r"^lab-vm-[12]\s+completed\s", out, re.M)) == 2
    incr = [int(line.split()[5]) for line in out.splitlines() if re.match(r"^lab-vm-[12]\s+completed\s", line)]
    assert all(b > 0 for b in incr)  # the writers' changes travelled as increments
    workdir = re.search(r"logs and state in (\S+)", out).group(1)
    with open(os.path.join(LAB_DIR, "vsphere", "lab.json")) as handle:
        password = json.load(handle)["password"]
    for name in os.listdir(workdir):
        path = os.path.join(workdir, name)
        if name.endswith(".log"):
            with open(path) as handle:
                assert password not in handle.read(), f"the vCenter password leaked into {name}"
    assert oct(os.stat(os.path.join(workdir, "secrets.json")).st_mode & 0o777) == "0o600"
