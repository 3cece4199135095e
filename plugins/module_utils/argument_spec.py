"""Connection options shared by every module, one function per endpoint.

Each function here is mirrored option for option by a doc fragment in
``plugins/doc_fragments/`` (``vsphere`` and ``openstack``); change both together.
Both endpoints appear in one module, so the OpenStack certificate switch is
``openstack_validate_certs`` (``validate_certs`` is vSphere's, as in the vmware
collections). Passwords and the OpenStack ``auth`` dict carry ``no_log`` so Ansible masks
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
            "no_log": True,
            "aliases": ["pass", "pwd"],
            "fallback": (env_fallback, ["VMWARE_PASSWORD"]),
        },
        "password_file": {"type": "path", "no_log": False},  # a path, not the secret
        "port": {"type": "int", "default": 443, "fallback": (env_fallback, ["VMWARE_PORT"])},
        # Not validate_certs: openstack.cloud's option of that name means the cloud, and a module of both action
        # groups would take a shared defaults dict's value for vCenter. The old name stays an alias until 0.2.0.
        "vcenter_validate_certs": {
            "type": "bool",
            "default": True,
            "aliases": ["validate_certs"],
            "deprecated_aliases": [
                {"name": "validate_certs", "version": "0.2.0", "collection_name": "xms.warm_migration"}
            ],
            "fallback": (env_fallback, ["VMWARE_VALIDATE_CERTS"]),
        },
    }


def openstack_argument_spec() -> Dict[str, Any]:
    """Options that reach the target OpenStack cloud."""
    return {
        "cloud": {"type": "str"},
        "auth": {"type": "dict", "no_log": True},
        "auth_type": {"type": "str"},
        "region_name": {"type": "str"},
        "openstack_validate_certs": {"type": "bool"},
        "ca_cert": {"type": "path", "aliases": ["cacert"]},
        "client_cert": {"type": "path", "aliases": ["cert"]},
        "client_key": {"type": "path", "aliases": ["key"], "no_log": False},  # a path, not the key
        "interface": {"type": "str", "choices": ["public", "internal", "admin"], "aliases": ["endpoint_type"]},
        "api_timeout": {"type": "int"},
    }


def source_vm_argument_spec() -> Dict[str, Any]:
    """Which source VM: by name (with datacenter/folder to disambiguate), instance UUID or moref."""
    return {
        "vm_name": {"type": "str"},
        "vm_uuid": {"type": "str"},
        "vm_moref": {"type": "str"},
        "datacenter": {"type": "str"},
        "folder": {"type": "str"},
    }


SOURCE_VM_ONE_OF = [["vm_name", "vm_uuid", "vm_moref"]]
# The vCenter password: in the arguments, or in a file on the host that runs the module (see the doc fragment).
PASSWORD_ONE_OF = [["password", "password_file"]]


def vddk_libdir_spec() -> Dict[str, Any]:
    """Where VDDK is unpacked on the host that runs the module: warm_migration_init checks its release, the
    data path modules load it."""
    return {"type": "path", "default": "/opt/vmware-vix-disklib-distrib"}


def reader_argument_spec() -> Dict[str, Any]:
    """What reads the source disks on the conversion host (warm_migration_init checks it before anything)."""
    return {
        "reader": {
            "type": "str",
            "default": "auto",
            "choices": ["auto", "nbdkit-vddk", "xms", "nfs"],
            "aliases": ["vddk_reader"],
        },
        "nfs_mounts": {"type": "dict", "default": {}},
        "state_dir": {"type": "path", "default": "/var/lib/xms-warm-migration"},
    }


def data_path_argument_spec() -> Dict[str, Any]:
    """How the conversion host reads source disks and writes target volumes."""
    return {
        "vddk_libdir": vddk_libdir_spec(),
        "vddk_transports": {"type": "str"},
        **reader_argument_spec(),
        "attach_mode": {"type": "str", "default": "brick", "choices": ["brick", "nova"]},
        "conversion_server": {"type": "str"},
        "bandwidth_limit": {"type": "int"},
        "parallel_disks": {"type": "int", "default": 4},
    }


def conversion_argument_spec() -> Dict[str, Any]:
    """The guest conversion with virt-v2v-in-place (cutover and test migrations)."""
    return {
        "conversion": {
            "type": "dict",
            "default": {},
            "options": {
                "skip": {"type": "bool", "default": False},
                "run_scripts": {"type": "list", "elements": "path", "default": []},
                "firstboot_scripts": {"type": "list", "elements": "path", "default": []},
                "timeout": {"type": "int", "default": 3600},
                "virtio_win": {"type": "path"},
                "virt_tools": {"type": "path", "default": "/usr/share/virt-tools"},
            },
        }
    }


def data_path_required_if() -> list:
    return [["attach_mode", "nova", ["conversion_server"]]]


def target_argument_spec() -> Dict[str, Any]:
    """The target of a migration in the OpenStack cloud (the same values at init and at cutover)."""
    return {
        "instance_name": {"type": "str"},
        "flavor": {"type": "str"},
        "volume_type": {"type": "str"},
        "disk_volume_types": {"type": "dict", "default": {}},
        "availability_zone": {"type": "str"},
        "volume_availability_zone": {"type": "str"},
        "network_map": {
            "type": "list",
            "elements": "dict",
            "default": [],
            "options": {
                "source": {"type": "str", "required": True},
                "network": {"type": "str", "required": True},
                "subnet": {"type": "str"},
            },
        },
        "fixed_ips": {"type": "dict", "default": {}},
    }
