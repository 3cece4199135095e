#!/usr/bin/env bash
# Build the zoo's phony Windows guest: a disk that virt-v2v's inspection and its Windows conversion take for
# a Windows Server 2022 VM of an estate, as virt-v2v's own test suite builds its phony Windows guests (no
# Windows here: nothing in it runs, and nothing boots it). Shaped as a VMware VM has it:
#   - MBR with a disk signature, a "System Reserved" NTFS partition and C: (NTFS), mapped in MountedDevices;
#   - the SOFTWARE and SYSTEM hives, built with hivex (hivexregedit) from the text below into an empty hive
#     this script writes (the registry file format: a base block and one hive bin holding the root key and
#     its security cell): the product (Server 2022 Standard, 10.0.20348), VMware Tools installed (an
#     uninstall entry), the DriverDatabase of Windows 8 and later, the VMware drivers (pvscsi, vmxnet3ndis6) as services, and a static IPv4
#     (10.10.1.70/24, gateway 10.10.1.1) on the vmxnet3's TCP/IP interface;
#   - C:\Windows\System32\cmd.exe, a PE32+ x86-64 header (inspection reads the architecture from it).
# Beside the image, in <image>-tools/, test doubles of what a conversion host needs for Windows, laid out as
# their publishers ship them (their binaries are PE headers that name what they stand for):
#   - virtio-win/: the virtio-win ISO's tree, <driver>/<Windows version>/amd64/ for viostor, vioscsi,
#     NetKVM, Balloon (with blnsvr.exe), viorng, pvpanic and vioserial, for 2k22, 2k19 and w10, and
#     guest-agent/qemu-ga-x86_64.msi;
#   - virt-tools/rhsrvany.exe: the service Fedora's mingw32-srvany installs in /usr/share/virt-tools.
# Prints the image's path (raw, 512 MiB sparse). Cached by the hash of this script; ~1 min the first time.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lab/guest/common.sh
. "$HERE/common.sh"
guest_build windows-guest "$HERE/build-windows.sh"
echo "[windows-guest] hives and files" >&2
python3 - "$work" <<'PY'
import os
import struct
import sys

work = sys.argv[1]
SIGNATURE = bytes.fromhex("5a4d5358")  # the MBR's disk signature, as MountedDevices names C:
C_OFFSET = 206848 * 512  # where C: starts (the partition table below)


def empty_hive(name):
    """A registry hive with only its root key (and the root's security cell, which hivex copies to new keys)."""
    sd = struct.pack("<BBHIIII", 1, 0, 0x8004, 0, 0, 0, 0)  # self-relative, a NULL DACL
    root_at, sk_at = 0x20, 0x20 + 0x58  # the root's cell: 4 + 76 + len("ROOT"), to a multiple of 8
    nk = b"nk" + struct.pack("<HQIIIIIIIIIIIIIIIHH", 0x2C, 0, 0, 0xFFFFFFFF, 0, 0, 0xFFFFFFFF, 0xFFFFFFFF, 0,
                             0xFFFFFFFF, sk_at, 0xFFFFFFFF, 0, 0, 0, 0, 0, 4, 0) + b"ROOT"
    sk = b"sk" + struct.pack("<HIIII", 0, sk_at, sk_at, 1, len(sd)) + sd
    cells = b""
    for at, body in ((root_at, nk), (sk_at, sk)):
        size = (len(body) + 4 + 7) & ~7
        cells = cells.ljust(at - 0x20, b"\0") + struct.pack("<i", -size) + body.ljust(size - 4, b"\0")
    used = 0x20 + len(cells)
    free = 0x1000 - used
    hbin = b"hbin" + struct.pack("<III", 0, 0x1000, 0).ljust(28, b"\0") + cells + struct.pack("<i", free)
    hbin = hbin.ljust(0x1000, b"\0")
    base = b"regf" + struct.pack("<IIQIIIIIII", 1, 1, 0, 1, 3, 0, 1, root_at, 0x1000, 1)
    base = base + name.encode("utf-16-le").ljust(64, b"\0")
    base = base.ljust(0x1FC, b"\0")
    checksum = 0
    for (word,) in struct.iter_unpack("<I", base):
        checksum ^= word
    return (base + struct.pack("<I", checksum)).ljust(0x1000, b"\0") + hbin


def text(value, kind):
    """A .reg hex(kind) value: REG_EXPAND_SZ (2) or REG_MULTI_SZ (7) in UTF-16LE."""
    data = (value + "\0").encode("utf-16-le") + (b"\0\0" if kind == 7 else b"")
    return f"hex({kind}):" + ",".join(f"{b:02x}" for b in data)


NIC = "{8a2f4c6e-31d7-4b5a-9e0c-5f1d2a7b3c90}"
DEVICE_PATH = text("%SystemRoot%\\inf", 2)
PVSCSI_PATH, VMXNET3_PATH = (text(f"System32\\drivers\\{d}.sys", 2) for d in ("pvscsi", "vmxnet3"))
ADDRESS, MASK, GATEWAY = (text(v, 7) for v in ("10.10.1.70", "255.255.255.0", "10.10.1.1"))
C_DRIVE = ",".join(f"{b:02x}" for b in SIGNATURE + struct.pack("<Q", C_OFFSET))
TOOLS = "{6B2E1A4C-0D3F-4E5A-8B7C-9D1E2F3A4B5C}"
hives = {
    "SOFTWARE": f"""Windows Registry Editor Version 5.00

[HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion]
"ProductName"="Windows Server 2022 Standard"
"EditionID"="ServerStandard"
"InstallationType"="Server"
"CurrentVersion"="6.3"
"CurrentMajorVersionNumber"=dword:0000000a
"CurrentMinorVersionNumber"=dword:00000000
"CurrentBuild"="20348"
"CurrentBuildNumber"="20348"
"SystemRoot"="C:\\\\Windows"

[HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion]
"DevicePath"={DEVICE_PATH}

[HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Uninstall\\{TOOLS}]
"DisplayName"="VMware Tools"
"DisplayVersion"="12.3.5.22544099"
"Publisher"="VMware, Inc."
"UninstallString"="MsiExec.exe /X{TOOLS}"
""",
    "SYSTEM": f"""Windows Registry Editor Version 5.00

[HKEY_LOCAL_MACHINE\\SYSTEM\\Select]
"Current"=dword:00000001
"Default"=dword:00000001
"Failed"=dword:00000000
"LastKnownGood"=dword:00000001

[HKEY_LOCAL_MACHINE\\SYSTEM\\DriverDatabase\\DeviceIds\\PCI]

[HKEY_LOCAL_MACHINE\\SYSTEM\\DriverDatabase\\DriverInfFiles]

[HKEY_LOCAL_MACHINE\\SYSTEM\\DriverDatabase\\DriverPackages]

[HKEY_LOCAL_MACHINE\\SYSTEM\\MountedDevices]
"\\\\DosDevices\\\\C:"=hex:{C_DRIVE}

[HKEY_LOCAL_MACHINE\\SYSTEM\\ControlSet001\\Control\\ComputerName\\ComputerName]
"ComputerName"="WIN-ESTATE01"

[HKEY_LOCAL_MACHINE\\SYSTEM\\ControlSet001\\Control\\Class\\{{4d36e972-e325-11ce-bfc1-08002be10318}}\\0001]
"DriverDesc"="vmxnet3 Ethernet Adapter"
"NetCfgInstanceId"="{NIC}"

[HKEY_LOCAL_MACHINE\\SYSTEM\\ControlSet001\\Services\\pvscsi]
"Type"=dword:00000001
"Start"=dword:00000000
"ErrorControl"=dword:00000001
"ImagePath"={PVSCSI_PATH}

[HKEY_LOCAL_MACHINE\\SYSTEM\\ControlSet001\\Services\\vmxnet3ndis6]
"Type"=dword:00000001
"Start"=dword:00000003
"ErrorControl"=dword:00000001
"ImagePath"={VMXNET3_PATH}

[HKEY_LOCAL_MACHINE\\SYSTEM\\ControlSet001\\Services\\Tcpip\\Parameters]
"Hostname"="WIN-ESTATE01"

[HKEY_LOCAL_MACHINE\\SYSTEM\\ControlSet001\\Services\\Tcpip\\Parameters\\Interfaces\\{NIC}]
"EnableDHCP"=dword:00000000
"IPAddress"={ADDRESS}
"SubnetMask"={MASK}
"DefaultGateway"={GATEWAY}
"NameServer"="10.10.1.1"
""",
}


def with_parents(reg, hive):
    """The .reg text with every key's parents before it: hivexregedit creates a key only under an existing one."""
    lines, seen = [], {f"HKEY_LOCAL_MACHINE\\{hive}"}
    for line in reg.splitlines():
        if line.startswith("[") and line.endswith("]"):
            parts = line[1:-1].split("\\")
            for depth in range(3, len(parts)):
                parent = "\\".join(parts[:depth])
                if parent not in seen:
                    lines += [f"[{parent}]", ""]
                    seen.add(parent)
            seen.add(line[1:-1])
        lines.append(line)
    return "\n".join(lines) + "\n"


for name, reg in hives.items():
    with open(f"{work}/{name}", "wb") as handle:
        handle.write(empty_hive(name))
    with open(f"{work}/{name}.reg", "w", encoding="utf-8") as handle:
        handle.write(with_parents(reg, name))



def pe(what, subsystem=3):
    """A PE32+ x86-64 header (the DOS stub's e_lfanew, the COFF header, the optional header's magic and
    subsystem: 3 console, 1 native for drivers), then what the file stands for, as text."""
    coff = struct.pack("<HHIIIHH", 0x8664, 0, 0, 0, 0, 240, 0x0022)
    optional = struct.pack("<H", 0x20B).ljust(68, b"\0") + struct.pack("<H", subsystem)
    head = b"MZ".ljust(0x3C, b"\0") + struct.pack("<I", 0x80)
    head = head.ljust(0x80, b"\0") + b"PE\0\0" + coff + optional.ljust(240, b"\0")
    return (head + f"phony {what}".encode()).ljust(1024, b"\0")


def put(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)


put(f"{work}/cmd.exe", pe("cmd.exe"))
DRIVERS = {"viostor": "viostor", "vioscsi": "vioscsi", "NetKVM": "netkvm", "Balloon": "balloon",
           "viorng": "viorng", "pvpanic": "pvpanic", "vioserial": "vioser"}  # fmt: skip
for folder, name in DRIVERS.items():
    for version in ("2k22", "2k19", "w10"):
        where = f"{work}/tools/virtio-win/{folder}/{version}/amd64"
        put(f"{where}/{name}.sys", pe(f"{name}.sys {version}", subsystem=1))
        put(f"{where}/{name}.inf", f"; phony {name}.inf {version}\r\n[Version]\r\nSignature=\"$WINDOWS NT$\"\r\n".encode())
        put(f"{where}/{name}.cat", f"phony {name}.cat {version}".encode())
        if folder == "Balloon":
            put(f"{where}/blnsvr.exe", pe(f"blnsvr.exe {version}"))
put(f"{work}/tools/virtio-win/guest-agent/qemu-ga-x86_64.msi", b"phony qemu-ga-x86_64.msi")
put(f"{work}/tools/virt-tools/rhsrvany.exe", pe("rhsrvany.exe"))
with open(f"{work}/signature", "wb") as handle:
    handle.write(SIGNATURE)
PY
for hive in SOFTWARE SYSTEM; do
  hivexregedit --merge --prefix "HKEY_LOCAL_MACHINE\\$hive" "$work/$hive" "$work/$hive.reg"
done

echo "[windows-guest] assembling the disk with libguestfs" >&2
truncate -s 512M "$work/disk.raw"
guestfish --rw -a "$work/disk.raw" >"$work/guestfish.log" 2>&1 <<GF || { tail -n 30 "$work/guestfish.log" >&2; exit 1; }
run
part-init /dev/sda mbr
part-add /dev/sda p 2048 206847
part-add /dev/sda p 206848 -1
part-set-bootable /dev/sda 1 true
part-set-mbr-id /dev/sda 1 0x07
part-set-mbr-id /dev/sda 2 0x07
mkfs ntfs /dev/sda1 "label:System Reserved"
mkfs ntfs /dev/sda2
mount /dev/sda2 /
mkdir-p /Windows/System32/config
mkdir-p /Windows/System32/drivers
mkdir-p "/Program Files/VMware/VMware Tools"
upload $work/SOFTWARE /Windows/System32/config/SOFTWARE
upload $work/SYSTEM /Windows/System32/config/SYSTEM
upload $work/cmd.exe /Windows/System32/cmd.exe
touch /Windows/System32/drivers/pvscsi.sys
touch /Windows/System32/drivers/vmxnet3.sys
GF
# The disk signature (MBR offset 0x1b8) MountedDevices names C: by; part-init writes a random one.
dd if="$work/signature" of="$work/disk.raw" bs=1 seek=$((0x1b8)) conv=notrunc status=none
inspected=$(virt-inspector --format=raw -a "$work/disk.raw" 2>&1) || { echo "$inspected" >&2; exit 1; }
echo "$inspected" | grep -q '<product_name>Windows Server 2022 Standard</product_name>' \
  || { echo "[windows-guest] inspection does not see Windows Server 2022: $inspected" >&2; exit 1; }
tools=${image%.raw}-tools
rm -rf "$tools"
mv "$work/tools" "$tools"
find "$OUT" -maxdepth 1 -name 'windows-guest-*-tools' ! -name "$(basename "$tools")" -exec rm -rf {} +
guest_done windows-guest
