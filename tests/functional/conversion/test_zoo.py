"""The guest zoo at conversion level: guests shaped as estates have them, nothing in them made for us.

The UEFI guest (lab/guest/build-uefi.sh): GPT, an ESP as Debian's installer leaves it (no EFI/BOOT
fallback), a separate /boot, root on LVM with XFS, Debian's full kernel, "quiet" and no serial console,
open-vm-tools, a static IPv4 on ens192 (ifupdown). It is converted once, on a qcow2 overlay of a copy
(as the cutover does), and boot-checked under OVMF with an empty variable store, as an instance starts.
(Its conversion under TCG takes ~8 minutes.)
"""

import subprocess

import pytest

from ansible_collections.xms.warm_migration.plugins.module_utils.conversion import overlay
from ansible_collections.xms.warm_migration.plugins.module_utils.conversion.boot_check import boot_check
from ansible_collections.xms.warm_migration.plugins.module_utils.conversion.errors import BootCheckError
from ansible_collections.xms.warm_migration.plugins.module_utils.conversion.virt_v2v import (
    ConversionOptions,
    NicIdentity,
    convert_in_place,
)

from ..conftest import guest_image

MAC = "00:50:56:01:00:09"


@pytest.fixture(scope="module")
def uefi_guest():
    return guest_image("build-uefi.sh")


@pytest.fixture(scope="module")
def converted_uefi(uefi_guest, tmp_path_factory):
    """A copy of the UEFI guest converted on an overlay (kept for the tests below), and the result."""
    tmp = tmp_path_factory.mktemp("uefi")
    copy = str(tmp / "disk.raw")
    subprocess.run(["cp", "--sparse=always", uefi_guest, copy], check=True)
    with overlay.overlays([copy], str(tmp / "state"), "uefi-guest") as layers:
        result = convert_in_place(layers, ConversionOptions(timeout_s=3600, log_dir=str(tmp / "logs")),
                                  name="uefi-guest", nics=[NicIdentity(MAC, "ens192")], fmt=overlay.FORMAT,
                                  firmware="efi")  # fmt: skip
        yield layers, result


@pytest.mark.timeout(1800)
def test_the_unconverted_uefi_guest_finds_no_loader_with_fresh_nvram(uefi_guest):
    with pytest.raises(BootCheckError) as err:
        boot_check([uefi_guest], macs=[MAC], firmware="efi", timeout_s=600)
    assert "UEFI firmware found no boot loader" in str(err.value)


@pytest.mark.timeout(3600)
def test_the_converted_uefi_guest_boots_with_fresh_nvram_and_brings_up_its_static_nic(converted_uefi):
    layers, result = converted_uefi
    assert result.converted and result.pinned_names == {"ens192": MAC}
    assert result.esp_fallback == "EFI/debian/shimx64.efi"  # virt-v2v 2.2 has no UEFI fix rule for Debian 12
    boot = boot_check(layers, macs=[MAC], required=[MAC], firmware="efi", fmt=overlay.FORMAT, timeout_s=900)
    assert boot.nics[MAC], boot.nics  # its ens192 (static, ifupdown) came up on virtio: IPv6 from the interface
    print(f"UEFI guest: conversion {result.duration_s:.0f} s, boot check {boot.duration_s:.0f} s: {boot.nics}")
