"""The guest zoo: guests shaped as estates have them, nothing in them made for us, each a VM of the vSphere lab.

``lab-vm-uefi`` holds the zoo's UEFI guest (lab/guest/build-uefi.sh): GPT, an ESP as Debian's installer
leaves it (no EFI/BOOT fallback), a separate /boot, root on LVM with XFS, Debian's full kernel, "quiet" and
no serial console, open-vm-tools, a static IPv4 (10.10.1.50/24, lab-net-a's subnet) on ens192 (ifupdown).
The VM has efi firmware, a PVSCSI controller and a vmxnet3 in slot 192; VMware Tools reports the address
(the lab reads it from the guest image). Its whole lifecycle runs: seed, cutover with conversion on
overlays, the boot check under OVMF with an empty variable store, Nova's UEFI instance answering at the
address. (Its conversion under TCG takes ~8 minutes.)
"""

import dataclasses

import pytest

from ansible_collections.xms.warm_migration.plugins.module_utils.conversion.boot_check import boot_check
from ansible_collections.xms.warm_migration.plugins.module_utils.conversion.errors import BootCheckError
from ansible_collections.xms.warm_migration.plugins.module_utils.conversion.virt_v2v import ConversionOptions
from ansible_collections.xms.warm_migration.plugins.module_utils.migration import store
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.context import MigrationContext
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.cutover import CutoverSettings, run_cutover
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.sync import run_sync
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.validation import ValidationSettings
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere import inventory

from ..conftest import guest_image
from .conftest import start

MAC = "00:50:56:01:00:0a"
ADDRESS = "10.10.1.50/24"


@pytest.mark.timeout(1800)
def test_the_unconverted_uefi_guest_finds_no_loader_with_fresh_nvram():
    with pytest.raises(BootCheckError) as err:
        boot_check([guest_image("build-uefi.sh")], macs=[MAC], firmware="efi", timeout_s=600)
    assert "UEFI firmware found no boot loader" in str(err.value)


@pytest.mark.timeout(3600)  # under TCG: a 3 GiB seed, an ~8 minute conversion, the boot check, Nova's UEFI boot
@pytest.mark.parametrize("cutover_vm", ["lab-vm-uefi"], indirect=True)
def test_the_uefi_guest_boots_with_fresh_nvram_and_answers_at_its_static_address(
    vsphere, cutover_vm, openstack, target, settings
):
    uefi_vm = cutover_vm
    inv = inventory.inventory(vsphere, uefi_vm)
    assert inv.firmware == "efi" and [(n.mac, n.guest_name, n.addresses) for n in inv.nics] == [
        (MAC, "ens192", (ADDRESS,))
    ]  # VMware Tools sees the address its ifupdown sets
    target = dataclasses.replace(target, fixed_ips={MAC: "10.10.1.50"})  # the port carries the guest's address
    migration_id = start(vsphere, uefi_vm, openstack, target).migration_id
    run_sync(MigrationContext.read(vsphere, uefi_vm, openstack), settings)
    cutover = CutoverSettings(sync=settings, boot_check=True, boot_check_timeout=900,
                              conversion=ConversionOptions(timeout_s=3000, log_dir=settings.state_dir),
                              validation=ValidationSettings(timeout_s=900))  # fmt: skip
    outcome = run_cutover(MigrationContext.read(vsphere, uefi_vm, openstack), target, cutover)
    assert outcome.steps_done == ["shutdown", "final_sync", "converted", "instance", "validated", "completed"]
    assert not [w for w in outcome.warnings if "fixed_ips" in w], outcome.warnings
    # The address VMware Tools saw before the shutdown is in the record; the guest's ifupdown names it: static.
    assert store.load(openstack, migration_id).guest_addresses == {MAC: [ADDRESS]}
    conversion = outcome.conversion
    assert conversion["pinned_names"] == {"ens192": MAC} and conversion["static_addresses"] == {MAC: [ADDRESS]}
    assert conversion["esp_fallback"] == "EFI/debian/shimx64.efi"  # virt-v2v 2.2 has no UEFI fix rule for Debian 12
    # Under OVMF with an empty variable store, its ens192 came up on virtio with its address: it answered who
    # holds 10.10.1.50.
    assert outcome.boot["firmware"] == "efi" and outcome.boot["addresses"] == {MAC: ["10.10.1.50"]}, outcome.boot
    # Nova booted it as UEFI (the volume's hw_firmware_type) and it answers at its own address.
    assert outcome.validation["passed"], outcome.validation
    checks = {e["check"]: e for e in outcome.validation["evidence"]}
    assert checks["ping"]["ok"] and checks["ping"]["target"] == "10.10.1.50", checks
    print(f"UEFI guest: conversion {conversion['duration_s']} s, boot check {outcome.boot['duration_s']} s,"
          f" downtime {outcome.downtime_s} s: {outcome.timings}")  # fmt: skip
