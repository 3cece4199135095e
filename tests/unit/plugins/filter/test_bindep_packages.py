"""The conversion_host role's reading of bindep.txt agrees with bindep's own, for both package families."""

import os

import pytest
from bindep.depends import Depends

from ansible_collections.xms.warm_migration.plugins.filter.bindep_packages import bindep_packages

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
with open(os.path.join(ROOT, "bindep.txt")) as _handle:
    BINDEP = _handle.read()


@pytest.mark.parametrize("family, platform", [("apt", ["platform:dpkg", "platform:debian"]),
                                              ("dnf", ["platform:rpm", "platform:redhat"])])  # fmt: skip
def test_the_conversion_host_lines_are_those_bindep_selects_by_default(family, platform):
    rules = Depends(BINDEP).active_rules(["default", *platform])
    assert sorted(set(bindep_packages(BINDEP, family))) == sorted({rule[0] for rule in rules})


def test_the_rpm_family_gets_the_vddk_plugin_and_a_kernel_and_no_debian_name():
    rpm = bindep_packages(BINDEP, "rpm")
    assert {"nbdkit-vddk-plugin", "kernel-core", "virt-v2v", "qemu-kvm"} <= set(rpm)
    assert "qemu-utils" not in rpm and "debootstrap" not in rpm


def test_an_unknown_family_is_refused():
    with pytest.raises(ValueError, match="unknown package family 'pacman'"):
        bindep_packages(BINDEP, "pacman")
