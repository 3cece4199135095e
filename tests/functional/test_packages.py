"""Every program the collection, its labs, tests, benchmarks and demo call comes from a package
that bindep.txt lists, so the set-up installs it on a fresh machine.

virt-v2v was once installed by hand on the machines the cutover was built on, and nothing in the
project installed it: both README commands failed on a new machine. Two checks keep that from
coming back:
- the programs named below must be on this machine and come from a package bindep.txt lists
  (or one installed because of it);
- every other program the sources run (an argv in Python, a command in a shell script) that
  resolves to an installed program outside Debian's base system must come from one too, so a
  new call is caught even if nobody adds it below.
"""

import ast
import os
import re
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SOURCES = ["plugins", "lab", "scripts", "tests", "bench"]
# The programs the project runs, and where: (the profile is the bindep.txt profile that must list it).
PROGRAMS = {
    "virt-v2v-in-place": "",
    "virt-customize": "",
    "nbdkit": "",
    "nbdcopy": "",
    "qemu-img": "",
    "qemu-system-x86_64": "",
    "qemu-nbd": "",
    "guestfish": "",
    "qemu-storage-daemon": "",  # the format layer of qcow2 and encrypted volumes (plugins/module_utils/copy/layer.py)
    "qemu-io": "test",
    "shellcheck": "test",
    "rsync": "test",
    "git": "test",
    "sshd": "test",
    "ssh": "test",
    "ssh-keygen": "test",
    "socat": "test",
    "chromium": "test",
    "promtool": "test",
    "debootstrap": "lab-guest",
    "go": "lab-vsphere",
    "gcc": "lab-vsphere",  # the lab's VDDK (lab/vsphere/vddk)
    "keystone-manage": "lab-openstack",
    "barbican-manage": "lab-openstack",
    "cinder-volume": "lab-openstack",
    "nova-compute": "lab-openstack",
    "neutron-server": "lab-openstack",
    "uwsgi": "lab-openstack",
    "mysql": "lab-openstack",
    "rabbitmqctl": "lab-openstack",
    "openstack": "lab-openstack",
}
ALL_PROFILES = ["test", "lab-guest", "lab-vsphere", "lab-openstack"]
NAME = re.compile(r"^[a-z][a-z0-9_.+-]{1,40}$")


def selection(*profiles: str) -> set:
    out = subprocess.run(["bash", os.path.join(ROOT, "scripts", "apt-install.sh"), "--list", *profiles],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    return set(out.split())


def owner(program: str):
    """(package, is part of Debian's base system) of the installed program, or None when not a dpkg file.

    The checkout's own programs (its venv's tools, first on PATH in these tests) are not
    what a fresh machine installs: look past them."""
    system_path = os.pathsep.join([*(p for p in os.environ["PATH"].split(os.pathsep) if not p.startswith(ROOT)),
                                   "/usr/sbin", "/sbin"])  # fmt: skip
    path = shutil.which(program, path=system_path)
    if not path:
        return None
    for candidate in dict.fromkeys([path, os.path.realpath(path)]):
        found = subprocess.run(["dpkg", "-S", candidate], capture_output=True, text=True, check=False)
        if found.returncode == 0:
            package = found.stdout.split(":", 1)[0].split(",")[0].strip()
            return package, package in base_system()
    return None


def base_system() -> set:
    """Packages every Debian system has (priority required or important, or essential)."""
    out = subprocess.run(["dpkg-query", "-W", "-f=${Package} ${Priority} ${Essential}\n"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    return {f[0] for f in (line.split() for line in out.splitlines()) if f[1:2] in (["required"], ["important"])
            or "yes" in f[2:]}  # fmt: skip


def installed_with(packages: set) -> set:
    """``packages`` and everything installed because of them (their dependencies, recursively)."""
    out = subprocess.run(["dpkg-query", "-W", "-f=${Package}\t${Depends}, ${Pre-Depends}\n"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    depends = {}
    for line in out.splitlines():
        name, _tab, deps = line.partition("\t")
        depends[name] = {
            alt.split()[0].split(":")[0] for dep in deps.split(",") for alt in dep.split("|") if alt.split()
        }
    seen, todo = set(), list(packages)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(depends.get(name, ()))
    return seen


COMMAND_POSITION = re.compile(
    r"(?:^|[;&|(]|\$\(|\bexec\s|\bthen\s|\bdo\s|\belse\s)\s*(?:[A-Z_]+=\S*\s+)*([a-z][\w.+-]*)"
)
ARGV_CALLS = {"which", "require", "execvp", "execv", "Popen", "run", "check_output"}


def mentioned_programs() -> dict:
    """Program names the sources run: {name: first file that runs it}.

    Python: the first string of a list or tuple literal (an argv), or the first argument of
    shutil.which / require / os.exec*. Shell: words in command position."""
    names = {}
    for top in SOURCES:
        for base, dirs, files in os.walk(os.path.join(ROOT, top)):
            dirs[:] = [d for d in dirs if d not in ("output", "__pycache__")]
            for name in files:
                path = os.path.join(base, name)
                with open(path, encoding="utf-8", errors="replace") as handle:
                    text = handle.read()
                if name.endswith(".py") or text.startswith("#!/usr/bin/env python"):
                    words = []
                    for node in ast.walk(ast.parse(text)):
                        if isinstance(node, (ast.List, ast.Tuple)) and node.elts:
                            words.append(node.elts[0])
                        elif isinstance(node, ast.Call) and node.args:
                            func = (
                                node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                            )
                            if func in ARGV_CALLS:
                                words.append(node.args[0])
                    words = [w.value for w in words if isinstance(w, ast.Constant) and isinstance(w.value, str)]
                elif name.endswith(".sh"):
                    lines = (line.split("#", 1)[0] for line in text.splitlines())
                    words = [m.group(1) for line in lines for m in COMMAND_POSITION.finditer(line)]
                else:
                    continue
                for word in words:
                    if NAME.match(word):
                        names.setdefault(word, os.path.relpath(path, ROOT))
    return names


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_program_is_installed_by_the_setup(program):
    found = owner(program)
    assert found, f"{program} is not installed: the set-up (scripts/apt-install.sh from bindep.txt) must install it"
    package, _base = found
    profile = PROGRAMS[program]
    listed = installed_with(selection(profile) if profile else selection())
    assert package in listed, f"{program} comes from {package}, which bindep.txt does not bring for {profile!r}"


def test_every_program_the_sources_run_is_installed_by_the_setup():
    listed = installed_with(selection(*ALL_PROFILES))
    unlisted = {}
    for word, where in mentioned_programs().items():
        found = owner(word)
        if found and not found[1] and found[0] not in listed:
            unlisted[word] = f"{found[0]} (run in {where})"
    assert not unlisted, f"programs from packages bindep.txt does not bring: {unlisted}"
