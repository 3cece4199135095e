# Copyright: xms.warm_migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A connection dict (warm_migration_vcenter, warm_migration_cloud) as the modules take it."""

from __future__ import annotations

from typing import Any, Mapping

DOCUMENTATION = r"""
name: connection_options
short_description: A connection dict without the fields a credential left empty
version_added: 0.1.0
description:
  - Drops the keys whose value is an empty string, at every level (the C(auth) dict of
    C(warm_migration_cloud) included), and returns the rest unchanged.
  - AWX and AAP render every field an C(extra_vars) injector names, and a field the credential leaves
    unset becomes an empty string; passed on, it would count as given (an empty C(password) beside
    C(password_file) is refused as both) or fail its type (an empty C(port)). The playbooks apply this
    filter to C(warm_migration_vcenter) and C(warm_migration_cloud), so the collection's credential
    types (C(docs/awx/credential_types)) can name every field.
  - An omitted dict gives an empty one, so the modules fall back to the E(VMWARE_*) and E(OS_*)
    environment and C(clouds.yaml).
options:
  _input:
    description: The connection dict, or nothing.
    type: dict
"""

EXAMPLES = r"""
- name: Sync, with the connections AWX's credentials inject
  xms.warm_migration.block_sync:
    vm_name: web01
  module_defaults:
    group/xms.warm_migration.openstack: >-
      {{ warm_migration_cloud | default({}) | xms.warm_migration.connection_options }}
"""

RETURN = r"""
_value:
  description: The dict without empty-string values.
  type: dict
"""


def connection_options(options: Mapping[str, Any] | None) -> dict:
    """``options`` without the empty strings an unset credential field renders to, at every level."""
    return {
        key: connection_options(value) if isinstance(value, Mapping) else value
        for key, value in (options or {}).items()
        if value != ""
    }


class FilterModule:
    def filters(self):
        return {"connection_options": connection_options}
