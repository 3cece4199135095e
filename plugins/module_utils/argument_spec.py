"""Connection options shared by every module, one function per endpoint.

Each function here is mirrored option for option by a doc fragment in
``plugins/doc_fragments/`` (``vsphere`` and ``openstack``); change both together.
Passwords and the OpenStack ``auth`` dict carry ``no_log`` so Ansible masks
them everywhere; every vSphere option falls back to the usual ``VMWARE_*``
environment variables so AWX credentials can inject them.
"""

from __future__ import annotations

from typing import Any, Dict

from ansible.module_utils.basic import env_fallback


def vsphere_argument_spec() -> Dict[str, Any]:
    """Options that reach a vCenter/ESXi endpoint."""
    return {
        "hostname": {"type": "str", "required": True, "fallback": (env_fallback, ["VMWARE_HOST"])},
        "username": {
            "type": "str",
            "required": True,
            "aliases": ["user"],
            "fallback": (env_fallback, ["VMWARE_USER"]),
        },
        "password": {
            "type": "str",
            "required": True,
            "no_log": True,
            "aliases": ["pass", "pwd"],
            "fallback": (env_fallback, ["VMWARE_PASSWORD"]),
        },
        "port": {"type": "int", "default": 443, "fallback": (env_fallback, ["VMWARE_PORT"])},
        "validate_certs": {"type": "bool", "default": True, "fallback": (env_fallback, ["VMWARE_VALIDATE_CERTS"])},
    }


def openstack_argument_spec() -> Dict[str, Any]:
    """Options that reach the target OpenStack cloud."""
    return {
        "cloud": {"type": "str"},
        "auth": {"type": "dict", "no_log": True},
        "region_name": {"type": "str"},
        "validate_certs": {"type": "bool", "aliases": ["verify"]},
        "ca_cert": {"type": "path", "aliases": ["cacert"]},
    }
