"""From validated module parameters to connected adapters and settings.

Every module takes the same connection, source-VM and data-path options (see
argument_spec.py); this is the one place that turns them into objects.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Dict, Iterator, Optional

from ansible_collections.xms.warm_migration.plugins.module_utils.conversion.virt_v2v import ConversionOptions
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.context import MigrationContext
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.errors import PreflightError
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.initialize import (
    NetworkMapping,
    TargetSettings,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.settings import SyncSettings
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack.client import OpenStackClient
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere import inventory as vs_inventory
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere.client import (
    VSphereClient,
    VSphereConnection,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere.datapath import Reader

Params = Dict[str, Any]


@contextlib.contextmanager
def module_context(params: Params, *, openstack: bool = True) -> Iterator[MigrationContext]:
    """The run's one context: vCenter connected (and logged out at the end), the source VM found and
    its inventory read, the cloud connected unless ``openstack`` is False."""
    with connect_vsphere(params) as vsphere:
        vm = find_source_vm(vsphere, params)
        yield MigrationContext.read(vsphere, vm, connect_openstack(params) if openstack else None)


def connect_vsphere(params: Params) -> VSphereClient:
    password = params["password"]
    if params.get("password_file"):
        password = read_secret_file(params["password_file"], "password_file")
    return VSphereClient.connect(
        VSphereConnection(
            hostname=params["hostname"],
            username=params["username"],
            password=password,
            port=params["port"],
            validate_certs=params["vcenter_validate_certs"],
        )
    )


def manifest_key(params: Params) -> Optional[bytes]:
    """The secret a shipped seed's manifest is signed with (``manifest_key_file``), or None."""
    path = params.get("manifest_key_file")
    return read_secret_file(path, "manifest_key_file").encode() if path else None


def read_secret_file(path: str, parameter: str) -> str:
    """The first line of ``path``, a file only the user the module runs as may read (PreflightError otherwise,
    naming ``parameter``).

    Checked before it is read: a secret file others can read, or another user's, is a leak waiting
    to happen, and the operator should hear of it, not have it used."""
    hint = f"Create it as the user the module runs as, with the secret on its first line: chmod 600 {path}"
    try:
        info = os.stat(path)
    except OSError as err:
        raise PreflightError(f"the file {path} cannot be read ({err.strerror})", parameter=parameter,
                             hint=hint) from None  # fmt: skip
    if info.st_mode & 0o077 or info.st_uid != os.geteuid():
        raise PreflightError(
            f"the file {path} is not private to this user (mode {info.st_mode & 0o777:o}, owner uid"
            f" {info.st_uid}, this user {os.geteuid()})",
            parameter=parameter,
            hint=hint,
        )
    with open(path) as handle:
        secret = handle.readline().rstrip("\r\n")
    if not secret:
        raise PreflightError(f"the file {path} holds nothing on its first line", parameter=parameter,
                             hint=hint)  # fmt: skip
    return secret


def find_source_vm(client: VSphereClient, params: Params):
    return vs_inventory.find_vm(
        client,
        name=params.get("vm_name"),
        datacenter=params.get("datacenter"),
        folder=params.get("folder"),
        uuid=params.get("vm_uuid"),
        moref=params.get("vm_moref"),
    )


def connect_openstack(params: Params) -> OpenStackClient:
    return OpenStackClient.connect(
        cloud=params.get("cloud"),
        auth=params.get("auth"),
        auth_type=params.get("auth_type"),
        region_name=params.get("region_name"),
        validate_certs=params.get("openstack_validate_certs"),
        ca_cert=params.get("ca_cert"),
        client_cert=params.get("client_cert"),
        client_key=params.get("client_key"),
        interface=params.get("interface"),
        api_timeout=params.get("api_timeout"),
    )


def target_settings(params: Params) -> TargetSettings:
    return TargetSettings(
        instance_name=params.get("instance_name"),
        flavor=params.get("flavor"),
        volume_type=params.get("volume_type"),
        disk_volume_types={str(k): v for k, v in (params.get("disk_volume_types") or {}).items()},
        availability_zone=params.get("availability_zone"),
        volume_availability_zone=params.get("volume_availability_zone"),
        network_map=[NetworkMapping(**m) for m in params.get("network_map") or []],
        fixed_ips={k.lower(): v for k, v in (params.get("fixed_ips") or {}).items()},
        cadence=params.get("cadence") or "manual",
    )


def sync_settings(params: Params) -> SyncSettings:
    """The data path's settings; numbers out of range are refused here, before anything runs."""
    if params["parallel_disks"] < 1:
        raise PreflightError(
            f"parallel_disks is {params['parallel_disks']}", parameter="parallel_disks",
            hint="Use 1 (one disk after the other) or more",
        )  # fmt: skip
    if params.get("bandwidth_limit") is not None and params["bandwidth_limit"] <= 0:
        raise PreflightError(
            f"bandwidth_limit is {params['bandwidth_limit']} bytes per second", parameter="bandwidth_limit",
            hint="Give a positive number of bytes per second, or leave it out for no limit",
        )  # fmt: skip
    return SyncSettings(
        state_dir=params["state_dir"],
        vddk_libdir=params["vddk_libdir"],
        vddk_transports=params.get("vddk_transports"),
        reader=Reader(params.get("reader") or "auto"),
        nfs_mounts={str(name): str(path) for name, path in (params.get("nfs_mounts") or {}).items()},
        attach_mode=params["attach_mode"],
        conversion_server=params.get("conversion_server"),
        bandwidth_limit=params.get("bandwidth_limit"),
        quiesce=bool(params.get("quiesce")),
        force_full=bool(params.get("force_full")),
        only_when_due=bool(params.get("only_when_due")),
        verify=bool(params.get("verify")),
        parallel_disks=params["parallel_disks"],
    )


def conversion_options(params: Params) -> ConversionOptions:
    conv = params["conversion"]
    return ConversionOptions(
        skip=conv["skip"],
        run_scripts=list(conv["run_scripts"]),
        firstboot_scripts=list(conv["firstboot_scripts"]),
        timeout_s=conv["timeout"],
        virtio_win=conv["virtio_win"],
        virt_tools=conv["virt_tools"],
        log_dir=os.path.join(params["state_dir"], "conversion"),
    )
