# Copyright: xms.warm_migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The packages of a conversion host: bindep.txt's lines without a profile, for one package family."""

from __future__ import annotations

import re
from typing import List

DOCUMENTATION = r"""
name: bindep_packages
short_description: The packages bindep.txt lists for a conversion host of one package family
version_added: 0.1.0
description:
  - Reads bindep.txt's lines that name no profile (a conversion host's, as the execution environment installs
    them) and keeps those whose platform selector matches the family, in file order, each once.
  - Understands the part of bindep's syntax the collection's bindep.txt uses - C(name [selectors]), where
    C(platform:X) selectors name a family and other selectors are profiles; the unit tests check it agrees with
    bindep itself.
options:
  _input:
    description: The text of bindep.txt.
    type: str
    required: true
  family:
    description:
      - The host's package family - C(dpkg), C(rpm), or Ansible's C(ansible_facts.pkg_mgr) (C(apt) is dpkg;
        C(dnf), C(dnf5) and C(yum) are rpm).
    type: str
    required: true
"""

EXAMPLES = r"""
- name: Install what a conversion host needs
  vars:
    bindep: "{{ lookup('ansible.builtin.file', 'bindep.txt') }}"
  ansible.builtin.package:
    name: "{{ bindep | xms.warm_migration.bindep_packages(ansible_facts.pkg_mgr) }}"
"""

RETURN = r"""
_value:
  description: The package names.
  type: list
  elements: str
"""

FAMILIES = {"apt": "dpkg", "dnf": "rpm", "dnf5": "rpm", "yum": "rpm", "dpkg": "dpkg", "rpm": "rpm"}


def bindep_packages(text: str, family: str) -> List[str]:
    """Names of ``text``'s profile-less lines for ``family`` (see DOCUMENTATION)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown package family '{family}': use dpkg, rpm or one of {sorted(FAMILIES)}")
    platform = f"platform:{FAMILIES[family]}"
    names: List[str] = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, _sep, rest = line.partition(" ")
        found = re.search(r"\[([^]]*)\]", rest)
        selectors = found.group(1).split() if found else []
        platforms = [s for s in selectors if s.startswith("platform:")]
        profiles = [s for s in selectors if not s.startswith("platform:")]
        if not profiles and (not platforms or platform in platforms) and name not in names:
            names.append(name)
    return names


class FilterModule:
    def filters(self):
        return {"bindep_packages": bindep_packages}
