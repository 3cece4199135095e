"""Fixtures for the vSphere lab: a logged-in client, lab VMs, the writer, the VDDK stand-in on PATH."""

import json
import os
import subprocess
import sys

import pytest

from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere.client import VSphereClient, VSphereConnection

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
LAB_DIR = os.path.join(os.environ.get("XMS_LAB_DIR", "/var/lib/xms-lab"), "vsphere")
CBT = os.path.join(ROOT, "lab", "vsphere", "cbt.py")


@pytest.fixture(scope="session")
def lab():
    path = os.path.join(LAB_DIR, "lab.json")
    if not os.path.exists(path):
        pytest.fail(f"the vSphere lab is not up ({path} is missing): run lab/vsphere/up.sh")
    with open(path) as handle:
        return json.load(handle)


def connection(lab, **override):
    values = {"hostname": lab["hostname"], "username": lab["username"], "password": lab["password"],
              "port": lab["port"], "validate_certs": False, **override}  # fmt: skip
    return VSphereConnection(**values)


@pytest.fixture(scope="session")
def client(lab):
    with VSphereClient.connect(connection(lab)) as session:
        yield session


def lab_cmd(*args):
    out = subprocess.run([sys.executable, CBT, *args], check=True, capture_output=True, text=True).stdout
    return json.loads(out) if out.strip() else {}
