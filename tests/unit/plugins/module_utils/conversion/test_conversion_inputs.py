"""Conversion inputs and console reading: the parts that need no guest to check."""

import subprocess
import xml.etree.ElementTree as ET

import pytest

from ansible_collections.xms.warm_migration.plugins.module_utils.conversion import boot_check
from ansible_collections.xms.warm_migration.plugins.module_utils.conversion.boot_check import qemu_argv, stuck_state
from ansible_collections.xms.warm_migration.plugins.module_utils.conversion.errors import ConversionError
from ansible_collections.xms.warm_migration.plugins.module_utils.conversion.virt_v2v import (
    ConversionOptions,
    NicIdentity,
    check_options,
    convert_in_place,
    domain_xml,
    esp_fallback_script,
    identity_script,
    nic_identity,
    static_ip_options,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere.inventory import Nic


def test_a_nic_is_named_by_its_pci_slot_as_linux_names_it_on_vmware():
    vmxnet3 = Nic(key=4000, mac="00:50:56:01:00:07", network="VM Network", adapter="vmxnet3", pci_slot=192)
    assert vmxnet3.guest_name == "ens192"
    assert Nic(key=4000, mac="00:50:56:01:00:07", network="VM Network", adapter="e1000").guest_name is None


def test_the_identity_script_pins_configured_names_and_finds_the_static_addresses(tmp_path):
    """Run by sh over a configuration tree laid out as the guest's /etc: a name or address the configuration
    does not name is left alone (10.10.1.5 is not 10.10.1.50; a leased address is in no file)."""
    (tmp_path / "etc/network").mkdir(parents=True)
    (tmp_path / "etc/network/interfaces").write_text(
        "auto ens192\niface ens192 inet static\n    address 10.10.1.50/24\n    gateway 10.10.1.1\n"
        "auto ens224\niface ens224 inet dhcp\n"
    )
    nics = [
        NicIdentity("00:50:56:01:00:07", "ens192", ("10.10.1.50/24", "10.10.1.5/24")),
        NicIdentity("00:50:56:01:00:08", "ens224", ("192.168.7.20/24",)),
        NicIdentity("00:50:56:01:00:09"),
    ]
    script = identity_script(nics).replace(" /etc/", f" {tmp_path}/etc/")
    (tmp_path / "etc/systemd/network").mkdir(parents=True)
    script = script.replace('"/etc/systemd/network', f'"{tmp_path}/etc/systemd/network')
    script = script.replace("mkdir -p /etc/systemd/network", "true")
    ran = subprocess.run(["sh", "-e"], input=script, text=True, capture_output=True, check=True)
    assert ran.stdout.splitlines() == ["xms-pinned ens192 00:50:56:01:00:07", "xms-pinned ens224 00:50:56:01:00:08",
                                       "xms-static 00:50:56:01:00:07 10.10.1.50/24"]  # fmt: skip
    link = (tmp_path / "etc/systemd/network/10-xms-ens192.link").read_text()
    assert "MACAddress=00:50:56:01:00:07" in link and "Name=ens192" in link


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


def test_windows_needs_virtio_win_and_a_first_boot_service_before_the_shutdown(tmp_path):
    windows = "windows2019srvNext_64Guest"
    with pytest.raises(ConversionError) as err:
        check_options(ConversionOptions(), windows)
    assert err.value.parameter == "conversion.virtio_win"
    drivers = tmp_path / "virtio-win"
    drivers.mkdir()
    with pytest.raises(ConversionError) as err:  # Debian's host as it comes: no /usr/share/virt-tools
        check_options(ConversionOptions(virtio_win=str(drivers), virt_tools=str(tmp_path / "none")), windows)
    assert err.value.parameter == "conversion.virt_tools" and "rhsrvany" in err.value.hint
    (tmp_path / "pvvxsvc.exe").write_bytes(b"MZ")
    check_options(ConversionOptions(virtio_win=str(drivers), virt_tools=str(tmp_path)), windows)
    check_options(ConversionOptions(skip=True), windows)  # nothing to convert: nothing needed
    check_options(ConversionOptions(virt_tools=str(tmp_path / "none")), "debian12_64Guest")


def test_windows_addresses_become_virt_v2v_static_ip_options():
    nics = [
        NicIdentity("00:50:56:01:00:0d", None, ("10.10.1.70/24", "10.10.1.71/24"), "10.10.1.1", ("10.0.0.53",)),
        NicIdentity("00:50:56:01:00:0e", None, ("192.168.9.4/26",)),  # no gateway in its subnet
        NicIdentity("00:50:56:01:00:0f"),
    ]
    assert static_ip_options(nics) == [
        "--mac", "00:50:56:01:00:0d:ip:10.10.1.70,10.10.1.1,24,10.0.0.53",
        "--mac", "00:50:56:01:00:0d:ip:10.10.1.71,10.10.1.1,24,10.0.0.53",
        "--mac", "00:50:56:01:00:0e:ip:192.168.9.4",
    ]  # fmt: skip


def test_a_nic_gets_the_guests_gateway_only_where_it_lies_in_one_of_its_subnets():
    inside = nic_identity("00:50:56:01:00:0d", None, ["10.10.1.70/24"], "10.10.1.1", ["10.0.0.53"])
    assert (inside.gateway, inside.dns) == ("10.10.1.1", ("10.0.0.53",))
    assert nic_identity("00:50:56:01:00:0e", None, ["192.168.9.4/26"], "10.10.1.1", ["10.0.0.53"]).gateway == ""
    assert nic_identity("00:50:56:01:00:0f", "ens224", [], "10.10.1.1", ["10.0.0.53"]) == NicIdentity(
        "00:50:56:01:00:0f", "ens224")  # fmt: skip


def test_skip_converts_nothing_and_says_so(tmp_path):
    result = convert_in_place([str(tmp_path / "never-opened.raw")], ConversionOptions(skip=True))
    assert (result.converted, result.skipped) == (False, True)


@pytest.mark.parametrize(
    "log, failure",
    [
        ("Gave up waiting for root file system device.  Common problems:\n(initramfs) ", "initramfs shell"),
        ("Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)\n", "kernel panic"),
        ('You are in emergency mode. After logging in, type "journalctl -xb"\n', "emergency mode"),
        # OVMF with an empty variable store and an ESP without EFI/BOOT (seen on the zoo's UEFI guest)
        (
            'BdsDxe: failed to load Boot0001 "UEFI Misc Device" from PciRoot(0x0)/Pci(0x3,0x0): Not Found\n'
            'BdsDxe: starting Boot0002 "EFI Internal Shell" from Fv(7CB8BDC9)/FvFile(7C04A583)\n',
            "no boot loader",
        ),
    ],
)
def test_console_of_a_stuck_guest_fails_at_once(log, failure):
    assert failure in stuck_state(log)


def test_console_still_booting_or_silent_is_no_verdict():
    assert stuck_state("Loading Linux 6.1.0-56-cloud-amd64 ...\n") is None
    assert stuck_state("") is None  # a guest without a serial console: the NICs decide


def test_boot_check_never_writes_the_volumes_and_captures_each_nic(tmp_path):
    macs = ["fa:16:3e:00:00:01", "fa:16:3e:00:00:02"]
    argv = qemu_argv(["/dev/vol-a", "/dev/vol-b"], macs, str(tmp_path), "tcg", 512)
    drives = [argv[i + 1] for i, a in enumerate(argv) if a == "-drive"]
    assert len(drives) == 2 and all("snapshot=on" in d for d in drives)

    devices = [argv[i + 1] for i, a in enumerate(argv) if a == "-device"]
    assert devices == ["virtio-blk-pci,drive=d0,bootindex=0", "virtio-blk-pci,drive=d1,bootindex=1",
                       "virtio-net-pci,netdev=n0,mac=fa:16:3e:00:00:01",
                       "virtio-net-pci,netdev=n1,mac=fa:16:3e:00:00:02"]  # fmt: skip
    dumps = [argv[i + 1] for i, a in enumerate(argv) if a == "-object"]
    assert dumps == [f"filter-dump,id=f{i},netdev=n{i},file={tmp_path}/nic{i}.pcap" for i in range(2)]
    assert all("restrict=on" in argv[i + 1] for i, a in enumerate(argv) if a == "-netdev")  # nothing leaves
    assert not any("pflash" in a for a in argv)  # SeaBIOS


def test_an_efi_guest_boots_with_ovmf_and_an_empty_variable_store(tmp_path, monkeypatch):
    code, template = tmp_path / "CODE.fd", tmp_path / "VARS.fd"
    code.write_bytes(b"code")
    template.write_bytes(b"empty variable store")
    monkeypatch.setattr(boot_check, "OVMF", ((str(code), str(template)),))
    work = tmp_path / "work"
    work.mkdir()
    argv = qemu_argv(["/dev/vol-a"], ["fa:16:3e:00:00:01"], str(work), "tcg", 512, firmware="efi")
    assert f"if=pflash,format=raw,unit=0,readonly=on,file={code}" in argv
    assert f"if=pflash,format=raw,unit=1,file={work}/OVMF_VARS.fd" in argv
    assert (work / "OVMF_VARS.fd").read_bytes() == b"empty variable store"  # a copy: the template stays clean


def test_a_host_without_ovmf_or_a_vm_without_nics_is_refused_before_the_shutdown(monkeypatch):
    monkeypatch.setattr(boot_check, "OVMF", (("/nonexistent/CODE.fd", "/nonexistent/VARS.fd"),))
    refused = boot_check.refusal("efi", 1)
    assert "OVMF" in refused.message and "ovmf" in refused.hint and refused.parameter == "boot_check"
    assert boot_check.refusal("bios", 1) is None
    assert "network_map" in boot_check.refusal("bios", 0).hint


def run_esp_fallback(root):
    """The script as virt-customize runs it in the guest, with the guest's root at ``root``."""
    script = esp_fallback_script().replace("/boot/efi/EFI /efi/EFI", f"{root}/boot/efi/EFI {root}/efi/EFI")
    done = subprocess.run(["sh", "-e"], input=script, capture_output=True, text=True, check=True)
    return done.stdout


def esp(tmp_path, files):
    for name, content in files.items():
        path = tmp_path / "boot" / "efi" / "EFI" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return tmp_path / "boot" / "efi" / "EFI"


def test_an_esp_as_debians_installer_leaves_it_gets_shim_and_grub_on_the_fallback_path(tmp_path):
    efi = esp(tmp_path, {"debian/shimx64.efi": "shim", "debian/grubx64.efi": "grub", "debian/mmx64.efi": "mm",
                         "debian/fbx64.efi": "fb", "debian/grub.cfg": "stub"})  # fmt: skip
    assert run_esp_fallback(tmp_path).endswith("xms-esp-fallback EFI/debian/shimx64.efi\n")
    assert {p.name: p.read_text() for p in (efi / "BOOT").iterdir()} == {
        "BOOTX64.EFI": "shim", "grubx64.efi": "grub", "mmx64.efi": "mm"}  # fmt: skip
    # shim's fallback stays out: it would write boot entries and reset the machine


def test_grub_without_shim_becomes_the_fallback_loader(tmp_path):
    efi = esp(tmp_path, {"arch/grubx64.efi": "grub"})
    assert "xms-esp-fallback EFI/arch/grubx64.efi" in run_esp_fallback(tmp_path)
    assert (efi / "BOOT" / "BOOTX64.EFI").read_text() == "grub"


def test_an_esp_with_a_fallback_loader_or_no_esp_is_left_alone(tmp_path):
    efi = esp(tmp_path, {"BOOT/BOOTX64.EFI": "theirs", "redhat/shimx64.efi": "shim", "redhat/grubx64.efi": "grub"})
    assert run_esp_fallback(tmp_path) == ""
    assert (efi / "BOOT" / "BOOTX64.EFI").read_text() == "theirs"
    assert run_esp_fallback(tmp_path / "bios-guest") == ""


def test_a_nic_with_static_addresses_gets_their_subnet_and_a_knock_at_each():
    """The router and DNS of the NIC's network take the subnet's first free addresses; a knock at each address
    is forwarded from a free local port to its port 22."""
    options, knocks, unchecked = boot_check.plan_knocks(
        {
            "00:50:56:01:00:09": ["10.10.1.1/24", "10.10.1.50/24", "192.168.7.5/24"],
            "00:50:56:01:00:0A": ["172.16.0.9/28"],
            "00:50:56:01:00:0b": [],
        }
    )
    assert [(k.mac, k.address) for k in knocks] == [
        ("00:50:56:01:00:09", "10.10.1.1"),
        ("00:50:56:01:00:09", "10.10.1.50"),
    ]
    assert options == {
        "00:50:56:01:00:09": ",net=10.10.1.0/24,host=10.10.1.2,dns=10.10.1.3"
        + "".join(f",hostfwd=tcp:127.0.0.1:{k.port}-{k.address}:22" for k in knocks)
    }
    assert unchecked == ["192.168.7.5/24 (00:50:56:01:00:09: a second subnet on one NIC)",
                         "172.16.0.9/28 (00:50:56:01:00:0A: a subnet smaller than /27)"]  # fmt: skip
    assert len({k.port for k in knocks}) == 2 and all(k.port > 0 for k in knocks)
    argv = qemu_argv(["/dev/vol-a"], ["00:50:56:01:00:09"], "/work", "tcg", 512, networks=options)
    assert "user,id=n0,restrict=on" + options["00:50:56:01:00:09"] in argv
