"""Waves from vCenter: the dynamic inventory recipe (playbooks/inventory/vcenter.vms.yml) as vmware.vmware's vms
plugin reads it from the vSphere lab (the tags over vAPI's JSON-RPC endpoint, lab/vsphere/vcsim/vapi.go), the
assessment of every VM of that vCenter, and a wave from a tag preflighted over two conversion hosts."""

import csv
import json
import os
import shutil
import subprocess
import sys

import pytest
import requests
import urllib3

from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere import inventory

from ..vsphere.conftest import VDDK_LIBDIR
from .conftest import wave_playbooks

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
RECIPE = os.path.join(ROOT, "playbooks", "inventory", "vcenter.vms.yml")
# Where scripts/setup-host.sh puts vmware.vmware (from the pinned Ansible community package).
VMWARE_COLLECTIONS = os.path.join(sys.prefix, "share", "ansible", "collections")
WAVES = {"wave1": ["lab-vm-1", "lab-vm-2"], "wave2": ["lab-vm-linux"]}
PINNED = {"lab-vm-linux": "conv-b"}  # tagged in the category conversion-host
GONE = "lab-vm-gone"  # a VM the static inventory lists and vCenter does not have
STRANDED = "lab-vm-stranded"  # one whose conversion host (pinned) cannot be reached


class Tagging:
    """vCenter's tagging over its REST API, as an operator's tooling sets tags (vcsim serves these calls)."""

    def __init__(self, lab):
        self.base = f"https://{lab['hostname']}:{lab['port']}/rest/com/vmware/cis"
        self.http = requests.Session()
        self.http.verify, self.http.trust_env = False, False  # the lab's certificate is self-signed
        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        login = self.http.post(f"{self.base}/session", auth=(lab["username"], lab["password"]))
        login.raise_for_status()
        self.http.headers["vmware-api-session-id"] = login.json()["value"]

    def call(self, method, path, body=None):
        answer = self.http.request(method, f"{self.base}/tagging/{path}", json=body)
        answer.raise_for_status()
        return answer.json().get("value") if answer.content else None

    def ensure(self, kind, name, spec):
        """The id of the category or tag named ``name``, created with ``spec`` when there is none."""
        for found in self.call("GET", kind) or []:
            if self.call("GET", f"{kind}/id:{found}")["name"] == name:
                return found
        return self.call("POST", kind, {"create_spec": {"name": name, "description": "", **spec}})


@pytest.fixture(scope="module")
def tagged(lab):
    tagging = Tagging(lab)
    single = {"cardinality": "SINGLE", "associable_types": ["VirtualMachine"]}
    for category_name, members in (("migration-wave", WAVES), ("conversion-host", {h: [v] for v, h in PINNED.items()})):
        category = tagging.ensure("category", category_name, single)
        for tag_name, vms in members.items():
            tag = tagging.ensure("tag", tag_name, {"category_id": category})
            for vm in vms:
                tagging.call("POST", f"tag-association/id:{tag}?~action=attach",
                             {"object_id": {"type": "VirtualMachine", "id": lab["vms"][vm]["moref"]}})  # fmt: skip


@pytest.fixture
def estate(lab, tmp_path, tagged):
    """The recipe as shipped beside a static inventory of two conversion hosts and the waves' target settings,
    and the playbook runner over both; vCenter's connection from the VMWARE_* environment, as the recipe says."""
    if not os.path.isdir(os.path.join(VMWARE_COLLECTIONS, "ansible_collections", "vmware", "vmware")):
        pytest.fail(f"vmware.vmware is not in {VMWARE_COLLECTIONS}: run scripts/setup-host.sh")
    recipe = tmp_path / "vcenter.vms.yml"
    shutil.copy(RECIPE, recipe)
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    run = wave_playbooks(lab, tmp_path, {
        "conversion_hosts": {"hosts": {"conv-a": local, "conv-b": local}},
        "vms": {"hosts": {GONE: {}, STRANDED: {"warm_migration_conversion_host": "conv-down"}}},
        # nothing listens on port 1: SSH to it fails at once
        "ungrouped": {"hosts": {"conv-down": {"ansible_host": "127.0.0.1", "ansible_port": 1,
                                              "ansible_connection": "ssh"}}},
        "wave1": {"vars": {"warm_migration_volume_type": "standard-ssd", "warm_migration_availability_zone": "az1",
                           "warm_migration_network_map": [{"source": "DC0_DVPG0", "network": "lab-net-a"}]}},
    }, {"vddk_libdir": VDDK_LIBDIR})  # fmt: skip
    collections = sys.modules["ansible_collections"].__path__[0].rsplit("/ansible_collections", 1)[0]
    env = {
        "VMWARE_HOST": lab["hostname"], "VMWARE_PORT": str(lab["port"]), "VMWARE_USER": lab["username"],
        "VMWARE_PASSWORD": lab["password"], "VMWARE_VALIDATE_CERTS": "false",
        "ANSIBLE_COLLECTIONS_PATH": f"{collections}:{VMWARE_COLLECTIONS}",
        # requests lets these override a session's verify=False (the plugin's validate_certs: false)
        "REQUESTS_CA_BUNDLE": "", "CURL_CA_BUNDLE": "",
    }  # fmt: skip
    return run, recipe, env, tmp_path


def test_the_recipe_makes_a_group_per_wave_tag_and_finds_each_vm_by_its_instance_uuid(lab, vsphere, estate):
    _run, recipe, env, _tmp = estate
    argv = [os.path.join(os.path.dirname(sys.executable), "ansible-inventory"), "-i", str(recipe), "--list"]
    listed = subprocess.run(argv, env={**os.environ, **env}, capture_output=True, text=True, check=False)
    assert listed.returncode == 0, listed.stderr[-3000:]
    found = json.loads(listed.stdout, object_hook=lambda d: d.get("__ansible_unsafe", d))  # vCenter's values are unsafe
    for wave, vms in WAVES.items():
        assert sorted(found[wave]["hosts"]) == sorted(vms)
    assert set(lab["vms"]) <= set(found["vms"]["hosts"])
    for vm in WAVES["wave1"]:
        uuid = inventory.inventory(vsphere, inventory.find_vm(vsphere, name=vm)).instance_uuid
        assert found["_meta"]["hostvars"][vm]["warm_migration_vm_uuid"] == uuid
    pinned = {vm: found["_meta"]["hostvars"][vm]["warm_migration_conversion_host"] for vm in ("lab-vm-1", *PINNED)}
    assert pinned == {"lab-vm-1": "", **PINNED}
    assert lab["password"] not in listed.stdout + listed.stderr


def test_assess_writes_every_vm_of_the_vcenter_and_goes_on_past_one_it_cannot_read(lab, vsphere, estate):
    run, recipe, env, tmp_path = estate
    page = tmp_path / "assessment.html"
    done = run("assess", "-i", str(recipe), "-e", "wave=vms", "-e", f"assess_path={page}", env_extra=env)
    with open(tmp_path / "assessment.csv", newline="") as handle:
        rows = {row["vm"]: row for row in csv.DictReader(handle)}
    assert set(lab["vms"]) | {GONE} <= set(rows), done.stdout[-3000:]
    assert rows[GONE]["verdict"] == "Fail" and "no VM is named" in rows[GONE]["reasons"]
    assert rows[STRANDED]["verdict"] == "Fail" and "its conversion host is unreachable" in rows[STRANDED]["reasons"]
    assert rows["lab-vm-indep"]["verdict"] == "Fail" and "independent" in rows["lab-vm-indep"]["reasons"]
    untouched = [name for name, row in rows.items() if row["guest_id"] == "otherGuest"]  # the VM vcsim made, unshaped
    assert untouched and all(rows[n]["verdict"] in ("Warn", "Fail") and "guest OS" in rows[n]["reasons"]
                             for n in untouched)  # fmt: skip
    for name in ("lab-vm-uefi", "lab-vm-trixie", "lab-vm-windows", "lab-vm-1"):
        inv = inventory.inventory(vsphere, inventory.find_vm(vsphere, name=name))
        row = rows[name]
        assert (row["firmware"], row["guest_id"], row["vcpus"], row["memory_mb"]) == (
            inv.firmware,
            inv.guest_id,
            str(inv.vcpus),
            str(inv.memory_mb),
        )
        assert (row["disk_count"], row["disks_total_bytes"]) == (
            str(len(inv.disks)),
            str(sum(d.capacity for d in inv.disks)),
        )
        assert row["nics"].count(";") + 1 == len(inv.nics) and all(n.mac in row["nics"] for n in inv.nics)
        assert (row["snapshot_count"], row["cbt_enabled"]) == (
            str(inv.snapshot_count),
            "yes" if inv.cbt_enabled else "no",
        )
        assert (
            row["verdict"]
            == {"pass": "Pass", "warn": "Warn", "fail": "Fail"}[
                inventory.preflight(
                    inv, inventory.datastore_space(vsphere, inventory.find_vm(vsphere, name=name))
                ).status
            ]
        )
    html = page.read_text()
    assert all(name in html for name in rows) and 'class="text verdict-fail"' in html
    assert lab["password"] not in html + (tmp_path / "assessment.csv").read_text()


def test_a_wave_from_a_tag_is_preflighted_over_both_conversion_hosts(estate, openstack):
    run, recipe, env, _tmp = estate
    done = run("preflight", "-i", str(recipe), env_extra=env)
    hosts = {vm: next(h for h in ("conv-a", "conv-b") if f"[{vm} -> {h}]" in done.stdout) for vm in WAVES["wave1"]}
    assert sorted(hosts.values()) == ["conv-a", "conv-b"], done.stdout[-3000:]
