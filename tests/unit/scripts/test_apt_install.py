"""scripts/apt-install.sh reads bindep.txt the way bindep itself does.

The set-up, the labs and the tests install only through that script, so its reader decides
what a fresh machine gets; bindep (the tool ansible-builder uses for execution environments)
is the reference for what the same file means.
"""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
PROFILES = ["test", "lab-guest", "lab-vsphere", "lab-openstack"]


def ours(*profiles: str) -> list:
    out = subprocess.run(["bash", os.path.join(ROOT, "scripts", "apt-install.sh"), "--list", *profiles],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    return sorted(out.split())


def bindeps(*profiles: str) -> list:
    tool = os.path.join(os.path.dirname(sys.executable), "bindep")
    argv = [tool, "--file", os.path.join(ROOT, "bindep.txt"), "-l", "newline", *profiles]
    out = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert out.returncode in (0, 1), out.stderr  # 1: something is missing, which is not the question here
    return sorted(set(out.stdout.split()))


@pytest.mark.parametrize("profiles", [(), *((p,) for p in PROFILES), tuple(PROFILES)])
def test_selection_matches_bindep(profiles):
    assert ours(*profiles) == bindeps(*profiles)


def test_conversion_host_gets_the_conversion_tools():
    """The lines without a profile are what an execution environment installs: the cutover needs these."""
    assert {"virt-v2v", "guestfs-tools", "nbdkit", "python3-libnbd", "qemu-utils"} <= set(ours())
