"""virt-v2v-in-place on the zoo's phony Windows guest (lab/guest/build-windows.sh), at conversion level.

No Windows can run here: the guest is a disk that virt-v2v's inspection and its Windows conversion take for a
Windows Server 2022 VM of an estate (NTFS, SOFTWARE and SYSTEM hives built with hivex, VMware Tools installed,
a static address on the vmxnet3), as virt-v2v's own tests build theirs. virtio-win and rhsrvany.exe are test
doubles laid out as their publishers ship them (the builder makes them beside the image). What these tests
show: which drivers virt-v2v takes for the guest's version and how it registers them, the first-boot scripts
it leaves (the static address restored on the adapter with the source's MAC, VMware Tools removed), and the
refusals. What stays unproven: that Windows boots with them (no Windows, no real drivers here).
"""

import os
import shutil
import subprocess

import pytest

from ansible_collections.xms.warm_migration.plugins.module_utils.conversion.errors import ConversionError
from ansible_collections.xms.warm_migration.plugins.module_utils.conversion.virt_v2v import (
    ConversionOptions,
    NicIdentity,
    check_options,
    convert_in_place,
)

from ..conftest import guest_image, libguestfs_env

MAC = "00:50:56:01:00:0d"
GUEST_ID = "windows2019srvNext_64Guest"  # vSphere's id for Windows Server 2022


def read_guest(disk, *paths):
    """The files at ``paths`` in the guest on ``disk`` (read-only), by path."""
    out = os.path.dirname(disk)
    script = "".join(f'download "{p}" {out}/{i}.got\n' for i, p in enumerate(paths))
    subprocess.run(["guestfish", "--ro", "--format=raw", "-a", disk, "-i"], input=script, text=True,
                   env=libguestfs_env(), check=True, capture_output=True)  # fmt: skip
    found = {}
    for i, path in enumerate(paths):
        with open(f"{out}/{i}.got", "rb") as handle:
            found[path] = handle.read()
    return found


def registry(hive_file, key):
    """A key of a hive file as .reg text (hivexregedit), values decoded by hivex."""
    return subprocess.run(["hivexregedit", "--export", hive_file, key], capture_output=True, text=True,
                          check=True).stdout  # fmt: skip


def reg_string(text):
    """A REG_SZ/EXPAND_SZ value as hivexregedit exports it (hex(1)/hex(2) of UTF-16LE) back to text."""
    data = bytes(int(b, 16) for b in text.split(":", 1)[1].split(","))
    return data.decode("utf-16-le").rstrip("\0")


@pytest.fixture(scope="module")
def windows():
    """The phony Windows image and its doubles: (image, virtio-win directory, virt-tools directory)."""
    image = guest_image("build-windows.sh")
    tools = image[: -len(".raw")] + "-tools"
    return image, os.path.join(tools, "virtio-win"), os.path.join(tools, "virt-tools")


@pytest.fixture(scope="module")
def converted(windows, tmp_path_factory):
    image, virtio_win, virt_tools = windows
    tmp = tmp_path_factory.mktemp("windows")
    disk = str(tmp / "disk.raw")
    subprocess.run(["cp", "--sparse=always", image, disk], check=True)
    options = ConversionOptions(virtio_win=virtio_win, virt_tools=virt_tools, timeout_s=1800,
                                log_dir=str(tmp / "logs"))  # fmt: skip
    # What VMware Tools reports of a Windows guest: the address (origin manual), the default gateway and DNS.
    nics = [NicIdentity(MAC, None, ("10.10.1.70/24",), gateway="10.10.1.1", dns=("10.10.1.1", "10.10.1.2"))]
    result = convert_in_place([disk], options, name="lab-vm-windows", nics=nics, guest_id=GUEST_ID)
    return disk, result


@pytest.mark.timeout(1800)
def test_the_guest_gets_the_virtio_drivers_of_its_windows_version_registered_to_boot(converted, tmp_path):
    disk, result = converted
    assert result.converted and not result.skipped
    files = read_guest(disk, "/Windows/Drivers/VirtIO/viostor.sys", "/Windows/Drivers/VirtIO/netkvm.inf",
                       "/Windows/System32/drivers/viostor.sys", "/Windows/System32/config/SYSTEM")  # fmt: skip
    # Server 2022's drivers (2k22/amd64), not 2019's or Windows 10's beside them in the same tree.
    assert b"phony viostor.sys 2k22" in files["/Windows/Drivers/VirtIO/viostor.sys"]
    assert b"phony netkvm.inf 2k22" in files["/Windows/Drivers/VirtIO/netkvm.inf"]
    assert b"phony viostor.sys 2k22" in files["/Windows/System32/drivers/viostor.sys"]
    system = tmp_path / "SYSTEM"
    system.write_bytes(files["/Windows/System32/config/SYSTEM"])
    viostor = registry(str(system), "\\ControlSet001\\Services\\viostor")
    assert '"Start"=dword:00000000' in viostor  # a boot-start driver: Windows finds its disk on virtio
    image_path = next(line for line in viostor.splitlines() if line.startswith('"ImagePath"'))
    assert reg_string(image_path).lower() == "system32\\drivers\\viostor.sys"
    # Windows 8 and later find a boot driver through the DriverDatabase: virtio-blk's PCI id is there.
    assert "[\\DriverDatabase\\DeviceIds\\PCI\\VEN_1AF4&DEV_1001" in registry(str(system), "\\DriverDatabase")
    # The first-boot service virt-v2v installs (the rhsrvany.exe double, copied into the guest) runs its scripts.
    service = registry(str(system), "\\ControlSet001\\Services\\firstboot")
    command = reg_string(next(line for line in service.splitlines() if line.startswith('"ImagePath"')))
    assert command.endswith("\\Guestfs\\Firstboot\\rhsrvany.exe -s firstboot") and '"Start"=dword:00000002' in service
    print(f"Windows conversion (phony guest): {result.duration_s:.0f} s; warnings: {result.warnings}")


@pytest.mark.timeout(1800)
def test_its_static_address_is_set_again_at_first_boot_on_the_adapter_with_its_mac(converted):
    disk, result = converted
    assert result.static_addresses == {MAC: ["10.10.1.70/24"]}
    scripts = read_guest(disk, "/Windows/Temp/v2vnetcf.ps1")["/Windows/Temp/v2vnetcf.ps1"].decode()
    assert "$mac_address = '00-50-56-01-00-0d'" in scripts
    assert "-IPAddress '10.10.1.70' -DefaultGateway '10.10.1.1' -PrefixLength 24" in scripts
    assert "-ServerAddresses ('10.10.1.1','10.10.1.2')" in scripts


@pytest.mark.timeout(1800)
def test_vmware_tools_is_removed_at_first_boot(converted):
    disk, _result = converted
    listing = subprocess.run(["virt-ls", "--format=raw", "-a", disk, "/Program Files/Guestfs/Firstboot/scripts"],
                             env=libguestfs_env(), capture_output=True, text=True, check=True).stdout  # fmt: skip
    uninstall = next(name for name in listing.split() if "uninstall-VMware-Tools" in name)
    script = read_guest(disk, f"/Program Files/Guestfs/Firstboot/scripts/{uninstall}")
    assert "MsiExec.exe /X{6B2E1A4C-0D3F-4E5A-8B7C-9D1E2F3A4B5C}" in next(iter(script.values())).decode()


@pytest.mark.timeout(1800)
def test_virtio_win_without_drivers_for_the_guest_version_fails_the_conversion(windows, tmp_path):
    image, virtio_win, virt_tools = windows
    only_w10 = tmp_path / "virtio-win"
    for folder in os.listdir(virtio_win):  # the same tree with Windows 10's drivers only
        if os.path.isdir(os.path.join(virtio_win, folder, "w10")):
            shutil.copytree(os.path.join(virtio_win, folder, "w10"), only_w10 / folder / "w10")
    disk = str(tmp_path / "disk.raw")
    subprocess.run(["cp", "--sparse=always", image, disk], check=True)
    options = ConversionOptions(virtio_win=str(only_w10), virt_tools=virt_tools, timeout_s=1800,
                                log_dir=str(tmp_path / "logs"))  # fmt: skip
    with pytest.raises(ConversionError) as err:
        convert_in_place([disk], options, name="lab-vm-windows", guest_id=GUEST_ID)
    # virt-v2v would leave the guest on emulated devices: on the instance's virtio disks it would not boot.
    assert err.value.parameter == "conversion.virtio_win" and "no virtio drivers" in str(err.value)


def test_windows_without_a_first_boot_service_is_refused_before_anything_runs(windows, tmp_path):
    _image, virtio_win, _virt_tools = windows
    # Debian's conversion host as it comes: no /usr/share/virt-tools at all
    with pytest.raises(ConversionError) as err:
        check_options(ConversionOptions(virtio_win=virtio_win, virt_tools=str(tmp_path / "virt-tools")), GUEST_ID)
    assert err.value.parameter == "conversion.virt_tools" and "rhsrvany.exe" in str(err.value)
