"""The built collection: only what a user installs, and every module and role documented from the install."""

import os
import subprocess
import sys
import tarfile

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
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
