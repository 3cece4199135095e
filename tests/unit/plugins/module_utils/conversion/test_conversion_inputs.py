"""Conversion inputs and console reading: the parts that need no guest to check."""

import subprocess
import xml.etree.ElementTree as ET

import pytest

from ansible_collections.xms.warm_migration.plugins.module_utils.conversion.boot_check import parse_console, qemu_argv
from ansible_collections.xms.warm_migration.plugins.module_utils.conversion.errors import ConversionError
from ansible_collections.xms.warm_migration.plugins.module_utils.conversion.virt_v2v import (
    ConversionOptions,
    NicIdentity,
    check_options,
    convert_in_place,
    domain_xml,
    pin_script,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere.inventory import Nic


def test_a_nic_is_named_by_its_pci_slot_as_linux_names_it_on_vmware():
    vmxnet3 = Nic(key=4000, mac="00:50:56:01:00:07", network="VM Network", adapter="vmxnet3", pci_slot=192)
    assert vmxnet3.guest_name == "ens192"
    assert Nic(key=4000, mac="00:50:56:01:00:07", network="VM Network", adapter="e1000").guest_name is None


def test_the_pin_script_pins_only_nics_with_a_vmware_name():
    script = pin_script([NicIdentity("00:50:56:01:00:07", "ens192"), NicIdentity("00:50:56:01:00:08")])
    assert subprocess.run(["sh", "-n"], input=script, text=True, check=False).returncode == 0
    calls = [line for line in script.splitlines() if line.startswith("pin ")]
    assert calls == ["pin ens192 00:50:56:01:00:07"]


def test_domain_xml_lists_disks_in_boot_order_and_nics_by_mac(tmp_path):
    disks = [tmp_path / "boot.raw", tmp_path / "data & logs.raw"]
    for disk in disks:
        disk.write_bytes(b"")
    root = ET.fromstring(domain_xml("web<01>", [str(d) for d in disks], ["00:50:56:01:00:07"]))
    assert root.find("name").text == "web<01>"
    sources = [d.find("source").get("file") for d in root.iter("disk")]
    assert sources == [str(d) for d in disks]
    assert [d.find("target").get("dev") for d in root.iter("disk")] == ["sda", "sdb"]
    assert [i.find("mac").get("address") for i in root.iter("interface")] == ["00:50:56:01:00:07"]


@pytest.mark.parametrize(
    "options, parameter",
    [
        (ConversionOptions(run_scripts=["/nonexistent/fix-network.sh"]), "conversion.run_scripts"),
        (ConversionOptions(firstboot_scripts=["/nonexistent/first.sh"]), "conversion.firstboot_scripts"),
        (ConversionOptions(virtio_win="/nonexistent/virtio-win.iso"), "conversion.virtio_win"),
        (ConversionOptions(timeout_s=0), "conversion.timeout"),
    ],
)
def test_bad_options_name_their_parameter(options, parameter):
    with pytest.raises(ConversionError) as err:
        check_options(options)
    assert err.value.parameter == parameter


def test_skip_converts_nothing_and_says_so(tmp_path):
    result = convert_in_place([str(tmp_path / "never-opened.raw")], ConversionOptions(skip=True))
    assert (result.converted, result.skipped) == (False, True)


def test_console_with_the_marker_reports_the_macs():
    log = "[  OK  ] Reached target multi-user.target\nXMS-BOOT-OK macs: ens3=FA:16:3E:00:00:01 ens4=fa:16:3e:00:00:02\n"
    verdict = parse_console(log)
    assert verdict.reached and verdict.failure is None
    assert verdict.macs == {"ens3": "fa:16:3e:00:00:01", "ens4": "fa:16:3e:00:00:02"}


@pytest.mark.parametrize(
    "log, failure",
    [
        ("Gave up waiting for root file system device.  Common problems:\n(initramfs) ", "initramfs shell"),
        ("Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)\n", "kernel panic"),
        ('You are in emergency mode. After logging in, type "journalctl -xb"\n', "emergency mode"),
    ],
)
def test_console_of_a_stuck_guest_fails_at_once(log, failure):
    verdict = parse_console(log)
    assert not verdict.reached
    assert failure in verdict.failure


def test_console_still_booting_has_no_verdict():
    verdict = parse_console("Loading Linux 6.1.0-56-cloud-amd64 ...\n")
    assert (verdict.reached, verdict.failure) == (False, None)


def test_boot_check_never_writes_the_volumes():
    argv = qemu_argv(["/dev/vol-a", "/dev/vol-b"], "fa:16:3e:00:00:01", "/tmp/console", "tcg", 512)
    drives = [argv[i + 1] for i, a in enumerate(argv) if a == "-drive"]
    assert len(drives) == 2 and all("snapshot=on" in d for d in drives)
    assert "virtio-net-pci,netdev=n0,mac=fa:16:3e:00:00:01" in argv
