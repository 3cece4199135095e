"""The labs as the benchmarks on them use them: what lab.json says, a vCenter session, a disk filled."""

import json
import os
import subprocess

import checkout  # noqa: F401  # pylint: disable=unused-import  # imported for its effect: the collection importable

from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere.client import VSphereConnection

LAB = os.environ.get("XMS_LAB_DIR", "/var/lib/xms-lab")


def lab_json() -> dict:
    """The vSphere lab's connection and VMs (lab/vsphere/populate.py writes it)."""
    with open(os.path.join(LAB, "vsphere", "lab.json")) as handle:
        return json.load(handle)


def vcenter(lab: dict) -> VSphereConnection:
    return VSphereConnection(hostname=lab["hostname"], port=lab["port"], username=lab["username"],
                             password=lab["password"], validate_certs=False)  # fmt: skip


def fill_with_random(vm: str, key: str, size: int) -> None:
    """``size`` bytes of random data (always the same) from the start of a lab VM's disk, through its live export,
    as its guest would write them."""
    live = f"nbd+unix:///live-{key}?socket={LAB}/vsphere/qsd/{vm}/nbd.sock"
    subprocess.run(["nbdkit", "-U", "-", "random", f"size={size}", "seed=7", "--run",
                    f"nbdcopy --flush \"$uri\" '{live}'"], check=True)  # fmt: skip
