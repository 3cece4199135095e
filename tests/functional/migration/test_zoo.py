"""The guest zoo: guests shaped as estates have them, nothing in them made for us, each a VM of the vSphere lab.

``lab-vm-uefi`` holds the zoo's UEFI guest (lab/guest/build-uefi.sh): GPT, an ESP as Debian's installer
leaves it (no EFI/BOOT fallback), a separate /boot, root on LVM with XFS, Debian's full kernel, "quiet" and
no serial console, open-vm-tools, a static IPv4 (10.10.1.50/24, lab-net-a's subnet) on ens192 (ifupdown).
The VM has efi firmware, a PVSCSI controller and a vmxnet3 in slot 192; VMware Tools reports the address
(the lab reads it from the guest image). Its whole lifecycle runs: seed, cutover with conversion on
overlays, the boot check under OVMF with an empty variable store, Nova's UEFI instance answering at the
address. (Its conversion under TCG takes ~8 minutes.)

``lab-vm-trixie`` holds the zoo's Debian 13 guest (lab/guest/build-trixie.sh): BIOS on GPT, Debian's full
6.12 kernel, a data disk mounted by UUID from fstab (no "nofail": without it systemd stops in emergency
mode, before any NIC comes up), NetworkManager keyfiles for ens192 (static 10.10.1.60/24) and ens224 (DHCP),
open-vm-tools. The VM has each disk on a PVSCSI controller of its own and vmxnet3s in slots 192 and 224, on a
distributed and a standard port group.

``lab-vm-windows`` holds the zoo's phony Windows Server 2022 disk (lab/guest/build-windows.sh): no Windows
boots here, so its cutover runs to the conversion and an instance, without a boot check or a validation.
"""

import dataclasses
import ipaddress
import re

import pytest

from ansible_collections.xms.warm_migration.plugins.module_utils.conversion.boot_check import boot_check
from ansible_collections.xms.warm_migration.plugins.module_utils.conversion.errors import BootCheckError
from ansible_collections.xms.warm_migration.plugins.module_utils.conversion.virt_v2v import ConversionOptions
from ansible_collections.xms.warm_migration.plugins.module_utils.migration import store
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.context import MigrationContext
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.cutover import CutoverSettings, run_cutover
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.initialize import NetworkMapping
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.sync import run_sync
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.validation import ValidationSettings
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere import inventory

from ..conftest import guest_image
from .conftest import start

MAC = "00:50:56:01:00:0a"
ADDRESS = "10.10.1.50/24"
TRIXIE_STATIC, TRIXIE_DHCP = "00:50:56:01:00:0b", "00:50:56:01:00:0c"
TRIXIE_ADDRESS = "10.10.1.60/24"
WINDOWS_MAC = "00:50:56:01:00:0d"


def migrate_and_boot(vsphere, vm, openstack, target, settings):
    """A zoo guest's whole lifecycle: seed, one sync, the cutover with its conversion, the boot check and the
    validation in the cloud (generous timeouts: all of it runs under TCG). The migration's id and outcome."""
    migration_id = start(vsphere, vm, openstack, target).migration_id
    run_sync(MigrationContext.read(vsphere, vm, openstack), settings)
    cutover = CutoverSettings(sync=settings, boot_check=True, boot_check_timeout=900,
                              conversion=ConversionOptions(timeout_s=3000, log_dir=settings.state_dir),
                              validation=ValidationSettings(timeout_s=900))  # fmt: skip
    outcome = run_cutover(MigrationContext.read(vsphere, vm, openstack), target, cutover)
    assert outcome.steps_done == ["shutdown", "final_sync", "converted", "instance", "validated", "completed"]
    return migration_id, outcome


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
    migration_id, outcome = migrate_and_boot(vsphere, uefi_vm, openstack, target, settings)
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


@pytest.mark.timeout(900)
def test_the_unconverted_debian_13_guest_comes_up_without_its_static_address():
    """Its initramfs has virtio's drivers, so it boots on KVM as it is, and NetworkManager brings its NICs up
    by DHCP under virtio's names: traffic alone would pass it. Its keyfile for ens192 no longer matches,
    so the address is gone: the check, asked for it as the conversion would ask, fails naming it."""
    boot = guest_image("build-trixie.sh")
    with pytest.raises(BootCheckError) as err:
        boot_check([boot, boot[: -len(".raw")] + "-data.img"], macs=[TRIXIE_STATIC, TRIXIE_DHCP],
                   required=[TRIXIE_STATIC, TRIXIE_DHCP], timeout_s=150,
                   addresses={TRIXIE_STATIC: [TRIXIE_ADDRESS]})  # fmt: skip
    message = str(err.value)
    assert f"10.10.1.60 on {TRIXIE_STATIC}" in message and "DHCP" in message, message[:600]


@pytest.mark.timeout(3600)  # under TCG: a 2 GiB seed, a ~3 minute conversion, the boot check, Nova's boot
@pytest.mark.parametrize("cutover_vm", ["lab-vm-trixie"], indirect=True)
def test_the_debian_13_guest_keeps_both_nics_its_static_address_and_its_data_disk(
    vsphere, cutover_vm, openstack, target, settings
):
    trixie = cutover_vm
    inv = inventory.inventory(vsphere, trixie)
    assert [(n.mac, n.guest_name, n.network, n.addresses) for n in inv.nics] == [
        (TRIXIE_STATIC, "ens192", "DC0_DVPG0", (TRIXIE_ADDRESS,)),  # VMware Tools sees its keyfile's address
        (TRIXIE_DHCP, "ens224", "VM Network", ()),
    ]
    assert [(d.controller, d.bus_number) for d in inv.disks] == [
        ("ParaVirtualSCSIController", 0),
        ("ParaVirtualSCSIController", 1),
    ]
    target = dataclasses.replace(
        target,
        network_map=[NetworkMapping(source="DC0_DVPG0", network="lab-net-a"),
                     NetworkMapping(source="VM Network", network="lab-net-b")],
        fixed_ips={TRIXIE_STATIC: "10.10.1.60"},
    )  # fmt: skip
    migration_id, outcome = migrate_and_boot(vsphere, trixie, openstack, target, settings)
    assert store.load(openstack, migration_id).guest_addresses == {TRIXIE_STATIC: [TRIXIE_ADDRESS]}
    conversion = outcome.conversion
    # Both names its NetworkManager keyfiles use are pinned; the static address is the keyfile's (address1=).
    assert conversion["pinned_names"] == {"ens192": TRIXIE_STATIC, "ens224": TRIXIE_DHCP}
    assert conversion["static_addresses"] == {TRIXIE_STATIC: [TRIXIE_ADDRESS]}
    # Both NICs came up (the data disk was found by its UUID, or systemd would have stopped before any NIC),
    # and ens192 answered who holds 10.10.1.60.
    assert sorted(outcome.boot["required"]) == sorted([TRIXIE_STATIC, TRIXIE_DHCP]), outcome.boot
    assert outcome.boot["addresses"] == {TRIXIE_STATIC: ["10.10.1.60"]}, outcome.boot
    # In the cloud it answers at its static address on lab-net-a and at the address Neutron's DHCP gave ens224.
    assert outcome.validation["passed"], outcome.validation
    pings = {e["target"]: e["ok"] for e in outcome.validation["evidence"] if e["check"] == "ping"}
    assert pings.pop("10.10.1.60") and len(pings) == 1, outcome.validation
    assert [ipaddress.ip_address(a) in ipaddress.ip_network("10.10.2.0/24") for a, ok in pings.items() if ok] == [True]
    print(f"Debian 13 guest: conversion {conversion['duration_s']} s, boot check {outcome.boot['duration_s']} s,"
          f" downtime {outcome.downtime_s} s: {outcome.timings}")  # fmt: skip


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("cutover_vm", ["lab-vm-windows"], indirect=True)
def test_the_windows_guest_is_converted_with_the_address_gateway_and_dns_its_tools_reported(
    vsphere, cutover_vm, openstack, target, settings
):
    """The phony Windows guest's lifecycle up to the instance: what VMware Tools reports before the shutdown
    (the address with origin manual, the gateway and DNS servers) reaches virt-v2v as its static-IP options.
    (tests/functional/conversion/test_windows.py shows what virt-v2v makes of them inside the guest.)

    Its instance goes to az2's fake-driver host: Nova (Zed) gives a Windows instance Hyper-V enlightenments,
    which QEMU 7.2 refuses under TCG ("kernel doesn't allow setting HyperV VP_INDEX"), so no Windows instance
    starts on the lab's libvirt host; the phony disk would not boot anyway."""
    windows = cutover_vm
    inv = inventory.inventory(vsphere, windows)
    assert inv.guest_id == "windows2019srvNext_64Guest"
    assert [(n.mac, n.addresses) for n in inv.nics] == [(WINDOWS_MAC, ("10.10.1.70/24",))]
    assert (inv.guest_gateway, inv.guest_dns) == ("10.10.1.1", ("10.10.1.1",))
    image = guest_image("build-windows.sh")
    tools = image[: -len(".raw")] + "-tools"
    target = dataclasses.replace(target, availability_zone="az2", fixed_ips={WINDOWS_MAC: "10.10.1.70"})
    migration_id = start(vsphere, windows, openstack, target).migration_id
    run_sync(MigrationContext.read(vsphere, windows, openstack), settings)
    conversion = ConversionOptions(virtio_win=f"{tools}/virtio-win", virt_tools=f"{tools}/virt-tools",
                                   timeout_s=1500, log_dir=settings.state_dir)  # fmt: skip
    cutover = CutoverSettings(sync=settings, conversion=conversion, validation=ValidationSettings(enabled=False))
    outcome = run_cutover(MigrationContext.read(vsphere, windows, openstack), target, cutover)
    assert outcome.steps_done == ["shutdown", "final_sync", "converted", "instance", "validated", "completed"]
    assert not outcome.warnings, outcome.warnings  # no vTPM, the tools ran, the port carries the address
    record = store.load(openstack, migration_id)
    assert (record.guest_addresses, record.guest_gateway, record.guest_dns) == (
        {WINDOWS_MAC: ["10.10.1.70/24"]}, "10.10.1.1", ["10.10.1.1"])  # fmt: skip
    assert outcome.conversion["static_addresses"] == {WINDOWS_MAC: ["10.10.1.70/24"]}
    boot_volume = openstack.conn.block_storage.get_volume(record.disks[0].volume_id)
    assert boot_volume.volume_image_metadata["os_type"] == "windows"  # Nova gives it Windows' clock and features
    with open(outcome.conversion["log"]) as log:
        ran = next(line for line in log if re.match(r"\$ \S*/virt-v2v-in-place ", line))  # run by its path
    assert f"--mac {WINDOWS_MAC}:ip:10.10.1.70,10.10.1.1,24,10.10.1.1" in ran, ran
