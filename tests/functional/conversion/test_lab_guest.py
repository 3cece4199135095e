"""virt-v2v-in-place and the boot check on the lab guest, a real Debian set up like a VMware guest.

One module-scoped conversion of a copy of the lab guest serves the tests below,
since a conversion under TCG takes minutes. The copy is a LUKS-encrypted qcow2
file, as Cinder's NFS driver makes an encrypted volume: conversion, the
first-boot script and the boot check all go through the collection's format
layer (a private FUSE view of the plaintext). (tests/functional/migration/
test_cutover.py converts a raw volume.) The lab guest image itself is never
written: the boot check boots with ``snapshot=on``.
"""

import hashlib
import os
import subprocess

import pytest

from ansible_collections.xms.warm_migration.plugins.module_utils.conversion.boot_check import boot_check
from ansible_collections.xms.warm_migration.plugins.module_utils.conversion.errors import (
    BootCheckError,
    ConversionError,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.conversion.virt_v2v import (
    ConversionOptions,
    NicIdentity,
    convert_in_place,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.copy.layer import VolumeFormat, plain_view

from ..conftest import guest_image, libguestfs_env, qemu_img

MAC = "00:50:56:01:00:07"
OTHER_MAC = "00:50:56:01:00:17"  # a second NIC, in slot 224, that the guest's configuration does not name
PASSPHRASE = bytes(range(32)).hex().encode()  # as Cinder derives it from a 32-byte key
# A check that must fail waits its whole timeout: long enough for the guest to come up (~40 s here under TCG,
# and what it sends by then is asserted), no longer.
NEGATIVE_TIMEOUT_S = 100


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(8 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def blank_disk(tmp_path):
    """64 MiB of zeros: a disk with no operating system on it."""
    blank = tmp_path / "blank.raw"
    with open(blank, "wb") as handle:
        handle.truncate(64 << 20)
    return blank


@pytest.fixture(scope="module")
def lab_guest():
    """The lab guest's image (built, or taken from the cache, by lab/guest/build.sh)."""
    return guest_image("build.sh")


@pytest.fixture(scope="module")
def converted(lab_guest, tmp_path_factory):
    """An encrypted copy of the lab guest converted in place, with a script, and the conversion's result."""
    tmp = tmp_path_factory.mktemp("converted")
    volume = str(tmp / "volume.qcow2")
    keyfile = tmp / "key"
    keyfile.write_bytes(PASSPHRASE)
    qemu_img("convert", "-O", "qcow2", "--object", f"secret,id=s1,file={keyfile}",
             "-o", "encrypt.format=luks,encrypt.key-secret=s1", lab_guest, volume)  # fmt: skip
    script = tmp / "stamp.sh"
    script.write_text("#!/bin/sh\necho converted-by-xms > /etc/xms-converted\n")
    options = ConversionOptions(run_scripts=[str(script)], timeout_s=1800, log_dir=str(tmp / "logs"))
    with plain_view(volume, VolumeFormat.QCOW2, PASSPHRASE, as_file=True) as disk:
        # VMware Tools on a Linux guest reports its leased address without an origin: the guest's configuration
        # (DHCP on ens192) names it nowhere, so it is no static address.
        nics = [NicIdentity(MAC, "ens192", ("192.168.7.20/24",)), NicIdentity(OTHER_MAC, "ens224")]
        result = convert_in_place([disk], options, name="lab-vm-linux", nics=nics)
        yield disk, result


def test_the_unconverted_guest_does_not_boot_on_virtio(lab_guest):
    before = sha256_file(lab_guest)
    with pytest.raises(BootCheckError) as err:
        boot_check([lab_guest], macs=[MAC], timeout_s=600)
    assert "root disk not found" in str(err.value)  # read on its serial console, long before the timeout
    assert sha256_file(lab_guest) == before  # the check booted a throw-away overlay


def test_conversion_makes_the_guest_boot_and_bring_up_its_nic(converted):
    """Nothing in the guest speaks to the check: the interface its ifupdown names (ens192, pinned to the MAC) comes
    up, and QEMU's capture hears it. Which frame comes first (the DHCP client's discover or the kernel's IPv6
    listener report) is a race; the check ends at the first, so any of them is the proof."""
    disk, result = converted
    assert result.converted and not result.skipped and os.path.exists(result.log)
    assert oct(os.stat(result.log).st_mode & 0o777) == "0o600"
    assert result.static_addresses == {}
    boot = boot_check([disk], macs=[MAC, OTHER_MAC], required=[MAC], timeout_s=900)
    assert boot.nics[MAC] and not boot.nics[OTHER_MAC], boot.nics  # ens224 is named nowhere in the guest
    assert boot.as_dict()["nics"] == boot.nics and boot.firmware == "bios"


def test_a_nic_the_guest_configures_that_stays_silent_fails_the_check_naming_it(converted):
    """ens224 is named nowhere in the guest: required (as if its configuration named it), it never comes up."""
    disk, _result = converted
    with pytest.raises(BootCheckError) as err:
        boot_check([disk], macs=[MAC, OTHER_MAC], required=[MAC, OTHER_MAC], timeout_s=NEGATIVE_TIMEOUT_S)
    assert f"no traffic within {NEGATIVE_TIMEOUT_S} s" in str(err.value) and OTHER_MAC in str(err.value)
    heard = str(err.value).split("heard: ", 1)[1]  # what the other NIC sent, to compare
    assert heard.startswith(f"{MAC}: ") and "DHCP discover" in heard.split("Last console")[0], heard[:300]
    assert "pinned_names" in err.value.hint


def test_a_static_address_the_converted_guest_does_not_hold_fails_the_check_naming_it(converted):
    """The address check is no formality: asked for an address it never had (it leases 10.0.2.15 from the
    check's network), the guest comes up and still fails the check, which names the address."""
    disk, _result = converted
    with pytest.raises(BootCheckError) as err:
        boot_check([disk], macs=[MAC], required=[MAC], timeout_s=NEGATIVE_TIMEOUT_S, addresses={MAC: ["10.0.2.77/24"]})
    message = str(err.value)
    assert f"did not answer within {NEGATIVE_TIMEOUT_S} s" in message and f"10.0.2.77 on {MAC}" in message, message[
        :400
    ]
    assert "static address" in err.value.hint


def test_conversion_rewrote_fstab_and_ran_the_script(converted):
    disk, _result = converted
    env = libguestfs_env()
    argv = [
        "guestfish",
        "--ro",
        "--format=raw",
        "-a",
        disk,
        "-i",
        "cat",
        "/etc/fstab",
        ":",
        "cat",
        "/etc/xms-converted",
        ":",
        "cat",
        "/etc/systemd/network/10-xms-ens192.link",
        ":",
        "ls",
        "/etc/systemd/network",
    ]
    read = subprocess.run(argv, capture_output=True, text=True, check=True, env=env)
    assert "/dev/vda1" in read.stdout and "/dev/sda1" not in read.stdout
    assert "converted-by-xms" in read.stdout
    # ens192 (its ifupdown's name) stays ens192 on virtio; ens224, named nowhere, gets no pin
    assert f"MACAddress={MAC}" in read.stdout and "Name=ens192" in read.stdout
    assert "ens224" not in read.stdout


def test_conversion_reports_the_names_it_pinned(converted):
    _disk, result = converted
    assert result.pinned_names == {"ens192": MAC}


def test_a_disk_without_a_guest_fails_clearly(tmp_path):
    blank = blank_disk(tmp_path)
    with pytest.raises(ConversionError) as err:
        convert_in_place([str(blank)], ConversionOptions(timeout_s=900, log_dir=str(tmp_path / "logs")), name="blank")
    assert "virt-v2v-in-place failed" in str(err.value) and "log:" in str(err.value)
    assert "rolled_back" in str(err.value)


def test_a_conversion_past_its_timeout_is_stopped(tmp_path):
    blank = blank_disk(tmp_path)
    with pytest.raises(ConversionError) as err:
        convert_in_place([str(blank)], ConversionOptions(timeout_s=3, log_dir=str(tmp_path / "logs")), name="slow")
    assert err.value.parameter == "conversion.timeout" and "did not finish" in str(err.value)
