"""The built collection: only what a user installs, and every module and role documented from the install; the
execution environments that install it."""

import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
# vmware.vmware, as scripts/setup-host.sh puts it beside the venv, and the release the controller's EE installs.
VMWARE_COLLECTIONS = os.path.join(sys.prefix, "share", "ansible", "collections")
VMWARE_VMWARE = "2.6.0"
LEFT_OUT = ("lab/", "tests/", ".ci/", "bench/", "scripts/", "extensions/molecule/", ".venv/", ".ansible/")


def run(*argv, **kwargs):
    done = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_the_built_collection_holds_no_lab_test_or_ci_and_documents_every_module_and_role(tmp_path):
    run(os.path.join(BIN, "ansible-galaxy"), "collection", "build", ROOT, "--output-path", str(tmp_path))
    (artifact,) = [p for p in os.listdir(tmp_path) if p.endswith(".tar.gz")]
    with tarfile.open(tmp_path / artifact) as tar:
        names = tar.getnames()
    shipped = [n for n in names if n.startswith(LEFT_OUT)]
    assert shipped == [], f"the artifact ships {shipped[:5]}"
    assert "plugins/modules/cutover.py" in names and "roles/cutover/tasks/main.yml" in names

    installed = tmp_path / "installed"
    # Only the temporary path counts: a copy of the collection installed on this machine must not stand in.
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(installed), "ANSIBLE_HOME": str(tmp_path / "home")}
    run(os.path.join(BIN, "ansible-galaxy"), "collection", "install", "--force", str(tmp_path / artifact),
        "-p", str(installed), env=env)  # fmt: skip
    prefix = "plugins/modules/"
    modules = sorted(n[len(prefix) : -3] for n in names if n.startswith(prefix) and n.endswith(".py"))
    assert "migration_test" in modules and "seed_import" in modules
    for module in modules:
        doc = run(os.path.join(BIN, "ansible-doc"), "--json", f"xms.warm_migration.{module}", env=env)
        assert f"xms.warm_migration.{module}" in yaml.safe_load(doc)
    roles = sorted({n.split("/")[1] for n in names if n.startswith("roles/") and n.count("/") >= 2})
    for role in roles:
        doc = run(os.path.join(BIN, "ansible-doc"), "--json", "-t", "role", f"xms.warm_migration.{role}", env=env)
        assert yaml.safe_load(doc), role


def pins(path: str) -> dict:
    """``name: requirement`` of a pip requirements file's pinned and bounded lines."""
    with open(os.path.join(ROOT, path)) as handle:
        lines = [line.split("#")[0].strip() for line in handle if line.strip() and not line.startswith(("#", "-r"))]
    return {re.split(r"[<>=!]", line)[0]: line for line in lines}


@pytest.mark.parametrize("definition", ["execution-environment.yml", "execution-environment-conversion-host.yml"])
def test_an_execution_environment_installs_the_built_collection_and_the_packages_its_role_needs(tmp_path, definition):
    """Everything short of the container build, which cannot run here: ansible-builder v3 takes the definition
    and writes the build context; the context's galaxy stage, run as its Containerfile runs it, installs the
    built collection; its introspection yields the packages the image would get. The controller gets none of
    the data path; the conversion host gets bindep.txt's rpm lines (VDDK plugin, a kernel) and requirements.txt."""
    galaxy = yaml.safe_load(Path(ROOT, "galaxy.yml").read_text())
    run(os.path.join(BIN, "ansible-galaxy"), "collection", "build", ROOT, "--output-path", str(tmp_path / "build"))
    shutil.copy(os.path.join(ROOT, definition), tmp_path)
    ee = yaml.safe_load((tmp_path / definition).read_text())
    deps = ee["dependencies"]
    tested = pins("requirements-dev.txt")
    assert deps["ansible_core"]["package_pip"] == tested["ansible-core"]
    assert deps["ansible_runner"]["package_pip"] == tested["ansible-runner"]
    assert ee["images"]["base_image"]["name"].endswith("stream10")  # Python 3.12: ansible-core 2.19 needs 3.11+
    tarball = f"xms-warm_migration-{galaxy['version']}.tar.gz"
    assert deps["galaxy"]["collections"][0] == {"name": f"collections/{tarball}", "type": "file"}
    others = {c["name"]: c["version"] for c in deps["galaxy"]["collections"][1:]}
    assert others == ({"vmware.vmware": VMWARE_VMWARE} if definition == "execution-environment.yml" else {})

    run(os.path.join(BIN, "ansible-builder"), "create", "--output-filename", "Containerfile",
        "-f", str(tmp_path / definition), "-c", str(tmp_path / "ctx"))  # fmt: skip
    build = tmp_path / "ctx" / "_build"
    assert (build / "collections" / tarball).exists()
    containerfile = (tmp_path / "ctx" / "Containerfile").read_text()
    assert "ansible-core==2.19" in containerfile and "WORKDIR /build" in containerfile
    env = {**os.environ, "ANSIBLE_HOME": str(tmp_path / "home"), "ANSIBLE_COLLECTIONS_PATH": str(tmp_path / "c")}
    if others:  # Galaxy cannot be reached here: what the build downloads is put in place first, as a cache holds it
        shutil.copytree(VMWARE_COLLECTIONS, tmp_path / "c")
    run(os.path.join(BIN, "ansible-galaxy"), "collection", "install", "-r", "requirements.yml",
        "--collections-path", str(tmp_path / "c"), cwd=build, env=env)  # fmt: skip
    introspect = [sys.executable, str(build / "scripts" / "introspect.py"), "introspect", str(tmp_path / "c"),
                  "--write-bindep", str(tmp_path / "bindep.txt"), "--write-pip", str(tmp_path / "pip.txt")]  # fmt: skip
    for option, name in (("--user-pip", "requirements.txt"), ("--user-bindep", "bindep.txt"),
                         ("--exclude-collection-reqs", "exclude-collections.txt")):  # fmt: skip
        if (build / name).exists():
            introspect += [f"{option}={build / name}"]
    run(*introspect, cwd=build)
    system, python = (tmp_path / "bindep.txt").read_text(), (tmp_path / "pip.txt").read_text()
    if definition == "execution-environment.yml":
        assert "openssh-clients [platform:rpm]" in system and "virt-v2v" not in system, system
        assert "openstacksdk" in python and "os-brick" not in python, python
        assert "vmware-vcenter" in python, python  # vmware.vmware's own requirements: the tags of the inventory
    else:
        for line in ("virt-v2v [platform:rpm]", "kernel-core [platform:rpm]", "nbdkit-vddk-plugin [platform:rpm]",
                     "python3-libnbd [platform:rpm]"):  # fmt: skip
            assert line in system, system
        assert "os-brick" in python, python
