"""Shape vcsim's generated VMs into the lab's VMs, then write lab.json.

vcsim creates VMs with one empty disk; the lab renames fifteen of them and gives
them the disks, NICs, firmware and quirks the tests need. The disk contents live in
qcow2 images that cbt.py serves (vcsim's own disk files stay empty).

A VM whose disks are a lab guest's images gets the VMware Tools view of a running
guest: the addresses its own network configuration sets (ifupdown, NetworkManager
keyfiles, Windows' registry, with its gateway and DNS servers), read from the image,
posted to the simulator (/lab/tools), which reports them in guest.net and
guest.ipStack while the VM is on.
"""

import configparser
import hashlib
import ipaddress
import json
import os
import re
import ssl
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from urllib.parse import unquote, urlsplit

from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim

LAB = os.path.join(os.environ.get("XMS_LAB_DIR", "/var/lib/xms-lab"), "vsphere")
MiB = 1 << 20
# The lab shapes these out of vcsim's VMs; the one it leaves as vcsim made it keeps the guest OS "otherGuest".
LAB_VMS = {
    # name: (disks as (capacity, MiB of data written at start), MACs (one NIC each), quirks)
    "lab-vm-1": ([(64 * MiB, 24), (32 * MiB, 8)], ["00:50:56:01:00:01"], {}),
    "lab-vm-2": ([(48 * MiB, 16), (32 * MiB, 4)], ["00:50:56:01:00:02"], {}),
    "lab-vm-stuck": ([(16 * MiB, 4)], ["00:50:56:01:00:03"], {"guest_ignores_shutdown": True}),
    "lab-vm-big": ([(3 << 40, 4)], ["00:50:56:01:00:04"], {}),
    "lab-vm-indep": ([(16 * MiB, 0)], ["00:50:56:01:00:06"], {"independent": True}),
    # A bootable Debian guest set up like a VMware one (lab/guest/build.sh) plus a data disk: for cutover.
    # Boot disk on an LSI Logic SAS controller, data disk on a PVSCSI one: a very common layout. Its NIC is
    # a vmxnet3 in PCI slot 192, as vCenter places one: the guest names it ens192 (its ifupdown does).
    "lab-vm-linux": (
        [(1 << 30, 0), (16 * MiB, 4)],
        ["00:50:56:01:00:07"],
        {"guest_images": ["XMS_LAB_GUEST_IMAGE"], "controllers": ["sas", "pvscsi"], "vmxnet3_slots": [192]},
    ),
    # The zoo's UEFI guest (lab/guest/build-uefi.sh): firmware efi, its disk on a PVSCSI controller, a vmxnet3
    # in slot 192 (ens192, with the static 10.10.1.50/24 its ifupdown sets: lab-net-a's subnet).
    "lab-vm-uefi": (
        [(3 << 30, 0)],
        ["00:50:56:01:00:0a"],
        {"guest_images": ["XMS_LAB_UEFI_IMAGE"], "controllers": ["pvscsi"], "vmxnet3_slots": [192], "firmware": "efi"},
    ),
    # The zoo's Debian 13 guest (lab/guest/build-trixie.sh): boot and data disk each on a PVSCSI controller of
    # its own (the data disk mounted by UUID), vmxnet3s in slots 192 and 224 (NetworkManager keyfiles: ens192
    # static 10.10.1.60/24 on DC0_DVPG0, ens224 by DHCP on the standard port group "VM Network").
    "lab-vm-trixie": (
        [(2 << 30, 0), (64 * MiB, 0)],
        ["00:50:56:01:00:0b", "00:50:56:01:00:0c"],
        {
            "guest_images": ["XMS_LAB_TRIXIE_IMAGE", "XMS_LAB_TRIXIE_DATA_IMAGE"],
            "controllers": ["pvscsi", "pvscsi"],
            "vmxnet3_slots": [192, 224],
            "networks": [None, "VM Network"],
        },
    ),
    # The zoo's phony Windows Server 2022 guest (lab/guest/build-windows.sh), its disk on a PVSCSI controller, a
    # vmxnet3 with the static 10.10.1.70/24 its registry sets (VMware Tools also reports its gateway and DNS
    # servers). It never boots: its lifecycle runs to the conversion and the instance, not to a validation.
    "lab-vm-windows": (
        [(512 * MiB, 0)],
        ["00:50:56:01:00:0d"],
        {
            "guest_images": ["XMS_LAB_WINDOWS_IMAGE"],
            "controllers": ["pvscsi"],
            "vmxnet3_slots": [192],
            "guest_id": "windows2019srvNext_64Guest",
        },
    ),
    # For the source-event tests (CBT reset, grown disks...): what they leave behind touches no other test.
    "lab-vm-events": ([(48 * MiB, 16), (32 * MiB, 4)], ["00:50:56:01:00:08"], {}),
    # Controller layouts for the boot-order tests; its disks hold no data (the lab serves none).
    "lab-vm-layout": ([], ["00:50:56:01:00:09"], {}),
    # The wave benchmark's VMs (bench/wave_bench.py fills their disks): empty, so a lab start stays cheap.
    **{f"lab-vm-bench-{i}": ([(2048 * MiB, 0), (2048 * MiB, 0)], [f"00:50:56:01:01:0{i}"], {}) for i in range(1, 5)},
}
# The lab's NFS datastore: a directory laid out as ESXi lays one out (cbt.py keeps each disk as a vmdk
# descriptor and its flat extent, a delta per snapshot), which vCenter reports as the export of an NFS
# server (info.nas). lab-vm-nfs is created on it (not shaped from vcsim's VMs, which are on LocalDS_0).
NFS_DATASTORE = "nfs-ds0"
NFS_VMS = {
    "lab-vm-nfs": ([(48 * MiB, 16), (32 * MiB, 4)], ["00:50:56:01:00:0e"], {}),
    "lab-vm-nfs-bench": ([(2048 * MiB, 0)], ["00:50:56:01:01:11"], {}),  # bench/nfs_bench.py fills it
}


def wait(task):
    while task.info.state not in ("success", "error"):
        time.sleep(0.05)
    if task.info.state == "error":
        raise SystemExit(f"vcsim task failed: {task.info.error}")
    return task.info.result


CONTROLLERS = {"sas": vim.vm.device.VirtualLsiLogicSASController, "pvscsi": vim.vm.device.ParaVirtualSCSIController}


def shape(vm, name, disks, macs, quirks):
    if vm.name != name:  # (a VM the lab created has its name already)
        wait(vm.Rename_Task(name))
    devices = vm.config.hardware.device
    controller = next(d for d in devices if isinstance(d, vim.vm.device.VirtualSCSIController))
    changes = [vim.vm.device.VirtualDeviceSpec(operation="remove", device=d)
               for d in devices if isinstance(d, vim.vm.device.VirtualDisk)]  # fmt: skip
    # Disk i on controller i of the quirk's list (bus i), or all on vcsim's own SCSI controller.
    keys = [controller.key] * len(disks)
    if quirks.get("controllers"):
        changes.append(vim.vm.device.VirtualDeviceSpec(operation="remove", device=controller))
        for bus, kind in enumerate(quirks["controllers"]):
            keys[bus] = -100 - bus
            new = CONTROLLERS[kind](key=keys[bus], busNumber=bus, sharedBus="noSharing")
            changes.append(vim.vm.device.VirtualDeviceSpec(operation="add", device=new))
    for unit, (capacity, _seed) in enumerate(disks):
        # (vcsim cannot hold a raw device mapping: it panics on one, so the lab has none.)
        mode = "independent_persistent" if quirks.get("independent") else "persistent"
        backing = vim.vm.device.VirtualDisk.FlatVer2BackingInfo(fileName="", diskMode=mode, thinProvisioned=True)
        on_own_bus = bool(quirks.get("controllers"))
        disk = vim.vm.device.VirtualDisk(key=-1 - unit, controllerKey=keys[unit], unitNumber=0 if on_own_bus else unit,
                                         capacityInBytes=capacity, backing=backing)  # fmt: skip
        changes.append(vim.vm.device.VirtualDeviceSpec(operation="add", fileOperation="create", device=disk))
    nic = next(d for d in devices if isinstance(d, vim.vm.device.VirtualEthernetCard))
    if quirks.get("vmxnet3_slots"):
        # vcsim's NIC is an e1000 in slot 32; vCenter keeps the slot an added device asks for. A NIC on a
        # network of its own gets a standard port group's backing; the others keep vcsim's (DC0_DVPG0).
        changes.append(vim.vm.device.VirtualDeviceSpec(operation="remove", device=nic))
        networks = quirks.get("networks") or [None] * len(macs)
        for index, (mac, slot, network) in enumerate(zip(macs, quirks["vmxnet3_slots"], networks)):
            backing = nic.backing
            if network:
                found = next(n for n in vm.runtime.host.network if n.name == network)
                backing = vim.vm.device.VirtualEthernetCard.NetworkBackingInfo(deviceName=network, network=found)
            vmxnet3 = vim.vm.device.VirtualVmxnet3(key=-50 - index, backing=backing, addressType="manual",
                                                   slotInfo=vim.vm.device.VirtualDevice.PciBusSlotInfo(
                                                       pciSlotNumber=slot), macAddress=mac)  # fmt: skip
            changes.append(vim.vm.device.VirtualDeviceSpec(operation="add", device=vmxnet3))
    else:
        [nic.macAddress] = macs
        nic.addressType = "manual"
        changes.append(vim.vm.device.VirtualDeviceSpec(operation="edit", device=nic))
    spec = vim.vm.ConfigSpec(deviceChange=changes, firmware=quirks.get("firmware", "bios"))
    # The guest OS setting an estate's VM has: the lab's are Debian guests (or stand for a Linux one) unless
    # they say otherwise; vCenter 8 knows no Debian 13, so its admins set 12 for trixie too.
    spec.guestId = quirks.get("guest_id", "debian12_64Guest")
    wait(vm.ReconfigVM_Task(spec))


def nfs_datastore(host):
    """The lab's NFS datastore on ``host``: its directory (LAB/nfs-ds0) as the export of 127.0.0.1."""
    found = next((ds for ds in host.datastore if ds.name == NFS_DATASTORE), None)
    if found is None:
        path = os.path.join(LAB, NFS_DATASTORE)  # vcsim names the datastore after the local path's last part
        os.makedirs(path, exist_ok=True)
        spec = vim.host.NasVolume.Specification(remoteHost="127.0.0.1", remotePath=path, localPath=path,
                                                accessMode="readWrite", type="NFS")  # fmt: skip
        found = host.configManager.datastoreSystem.CreateNasDatastore(spec)
    return found


def create_on_nfs(content, name):
    """A VM whose files are on the lab's NFS datastore (a SCSI controller and an e1000, as shape() expects)."""
    datacenter = content.rootFolder.childEntity[0]
    host = datacenter.hostFolder.childEntity[0].host[0]
    nfs_datastore(host)
    controller = vim.vm.device.VirtualLsiLogicController(key=-200, busNumber=0, sharedBus="noSharing")
    network = next(n for n in host.network if n.name == "VM Network")
    nic = vim.vm.device.VirtualE1000(key=-201, backing=vim.vm.device.VirtualEthernetCard.NetworkBackingInfo(
        deviceName=network.name, network=network))  # fmt: skip
    config = vim.vm.ConfigSpec(name=name, numCPUs=1, memoryMB=1024, guestId="debian12_64Guest",
                               files=vim.vm.FileInfo(vmPathName=f"[{NFS_DATASTORE}]"),
                               deviceChange=[vim.vm.device.VirtualDeviceSpec(operation="add", device=controller),
                                             vim.vm.device.VirtualDeviceSpec(operation="add", device=nic)])  # fmt: skip
    pool = datacenter.hostFolder.childEntity[0].resourcePool
    return wait(datacenter.vmFolder.CreateVM_Task(config=config, pool=pool, host=host))


def ifupdown_static(text):
    """Per interface, the IPv4 addresses an ifupdown configuration sets statically (``10.10.1.50/24``)."""
    found, current = {}, None
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if words[0] == "iface":
            current = words[1] if words[2:4] == ["inet", "static"] else None
        elif words[0] in ("auto", "allow-hotplug", "mapping", "source", "source-directory"):
            current = None
        elif current and words[0] == "address" and len(words) > 1:
            found.setdefault(current, []).append(words[1])
        elif current and words[0] == "netmask" and len(words) > 1 and found.get(current):
            last = found[current][-1]
            if "/" not in last:
                found[current][-1] = str(ipaddress.IPv4Interface(f"{last}/{words[1]}"))
    return found


def keyfile_static(text):
    """The interface and IPv4 addresses a NetworkManager keyfile sets statically (``method=manual``)."""
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.read_string(text)
    name = parser.get("connection", "interface-name", fallback="")
    if not name or parser.get("ipv4", "method", fallback="auto") != "manual":
        return {}
    # addressN=ADDRESS/PREFIX[,GATEWAY]
    addresses = [value.split(",")[0].strip() for key, value in parser.items("ipv4") if re.fullmatch(r"address\d*", key)]
    return {name: addresses} if addresses else {}


def reg_values(text):
    """Per key of a hivexregedit export, its values decoded: strings (REG_SZ, REG_MULTI_SZ as lists), dwords."""
    found, key = {}, None
    for line in text.splitlines():
        if line.startswith("[") and line.endswith("]"):
            key = found.setdefault(line[1:-1], {})
        elif key is not None and line.startswith('"') and '"=' in line:
            name, value = line[1:].split('"=', 1)
            if value.startswith("dword:"):
                key[name] = int(value[6:], 16)
            elif value.startswith(("hex(1):", "hex(2):", "hex(7):")):
                data = bytes(int(b, 16) for b in value.split(":", 1)[1].split(",") if b)
                strings = data.decode("utf-16-le").rstrip("\0").split("\0")
                key[name] = strings if value.startswith("hex(7)") else strings[0]
    return found


def windows_static(text):
    """A SYSTEM hive's TCP/IP interfaces (hivexregedit's export of Tcpip\\Parameters\\Interfaces): the
    addresses each sets statically, in the hive's order, and the first default gateway and DNS servers."""
    adapters, gateway, dns = [], "", []
    for values in reg_values(text).values():
        if values.get("EnableDHCP", 1) or not values.get("IPAddress"):
            continue
        masks = values.get("SubnetMask") or []
        adapters.append([str(ipaddress.IPv4Interface(f"{ip}/{mask}")) for ip, mask in zip(values["IPAddress"], masks)])
        gateway = gateway or next(iter(values.get("DefaultGateway") or []), "")
        dns = dns or values.get("NameServer", "").replace(",", " ").split()
    return adapters, gateway, dns


def guest_network(image):
    """What the guest on ``image`` configures, read from the image itself (libguestfs: the guest never runs
    in the vSphere lab), as its VMware Tools would report it: a Linux guest's static addresses per interface
    name (ifupdown, NetworkManager keyfiles); a Windows guest's per adapter, with its gateway and DNS
    servers. Cached beside the image: the image's name holds its build's hash."""
    cache = image + ".network.json"
    if os.path.exists(cache):
        with open(cache) as handle:
            return json.load(handle)
    env = {**os.environ, "LIBGUESTFS_BACKEND": "direct"}
    accel = os.path.join(os.path.dirname(__file__), "..", "..", "plugins", "module_utils", "conversion", "accel.py")
    if subprocess.run([sys.executable, accel], capture_output=True, text=True, check=True).stdout.strip() != "kvm":
        env["LIBGUESTFS_BACKEND_SETTINGS"] = "force_tcg"
    found = {"nics": {}, "adapters": [], "gateway": "", "dns": []}
    with tempfile.TemporaryDirectory() as tmp:
        # One appliance: what is missing in this guest ("-": not an error) is simply not there afterwards.
        script = (f"-download /etc/network/interfaces {tmp}/interfaces\n"
                  f"-tar-out /etc/NetworkManager/system-connections {tmp}/keyfiles.tar\n"
                  f"-download /Windows/System32/config/SYSTEM {tmp}/SYSTEM\n")  # fmt: skip
        subprocess.run(["guestfish", "--ro", "--format=raw", "-a", image, "-i"], input=script, env=env,
                       capture_output=True, text=True, check=True)  # fmt: skip
        if os.path.exists(f"{tmp}/interfaces"):
            with open(f"{tmp}/interfaces") as handle:
                found["nics"].update(ifupdown_static(handle.read()))
        if os.path.exists(f"{tmp}/keyfiles.tar"):
            with tarfile.open(f"{tmp}/keyfiles.tar") as keyfiles:
                for member in keyfiles.getmembers():
                    if member.isfile() and member.name.endswith(".nmconnection"):
                        found["nics"].update(keyfile_static(keyfiles.extractfile(member).read().decode()))
        if os.path.exists(f"{tmp}/SYSTEM"):
            interfaces = "\\ControlSet001\\Services\\Tcpip\\Parameters\\Interfaces"
            export = subprocess.run(["hivexregedit", "--export", f"{tmp}/SYSTEM", interfaces], capture_output=True,
                                    text=True, check=True).stdout  # fmt: skip
            found["adapters"], found["gateway"], found["dns"] = windows_static(export)
    with open(cache + ".tmp", "w") as handle:
        json.dump(found, handle)
    os.replace(cache + ".tmp", cache)
    return found


def post_tools(host, port, reports):
    """What each guest's VMware Tools reports (per VM moref, per MAC, its addresses), to the simulator."""
    request = urllib.request.Request(f"https://{host}:{port}/lab/tools", method="POST",
                                     data=json.dumps(reports).encode(),
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    urllib.request.urlopen(request, context=ssl._create_unverified_context(), timeout=10).close()


def main():
    with open(os.path.join(LAB, "vcsim.url")) as handle:
        url = urlsplit(handle.read().strip())
    host, port, user, password = url.hostname, url.port, unquote(url.username), unquote(url.password)
    si = SmartConnect(host=host, port=port, user=user, pwd=password, sslContext=ssl._create_unverified_context())
    content = si.RetrieveContent()
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
    by_name = {vm.name: vm for vm in view.view}
    if not all(name in by_name for name in LAB_VMS):
        # vcsim names them <place>_VM<n>; the lab VMs that came first keep the ones they always had.
        spare = sorted((n for n in by_name if n not in LAB_VMS), key=lambda n: (int(n.rsplit("VM", 1)[1]) >= 4, n))
        for name, (disks, macs, quirks) in LAB_VMS.items():
            if name not in by_name:
                shape(by_name[spare.pop(0)], name, disks, macs, quirks)
        by_name = {vm.name: vm for vm in view.view}
    for name, (disks, macs, quirks) in NFS_VMS.items():
        if name not in by_name:
            shape(create_on_nfs(content, name), name, disks, macs, quirks)
    by_name = {vm.name: vm for vm in view.view}
    der = ssl.PEM_cert_to_DER_cert(ssl.get_server_certificate((host, port)))
    thumbprint = ":".join(f"{b:02X}" for b in hashlib.sha1(der).digest())  # as VDDK and the adapter write it
    lab = {"hostname": host, "port": port, "username": user, "password": password, "thumbprint": thumbprint, "vms": {}}
    tools = {}
    for name, (disks, macs, quirks) in {**LAB_VMS, **NFS_VMS}.items():
        vm = by_name[name]
        entry = {"moref": vm._moId, "disks": {}, **{k: v for k, v in quirks.items() if k == "guest_ignores_shutdown"}}
        if name in NFS_VMS:
            entry["nfs_datastore"] = os.path.join(LAB, NFS_DATASTORE)
        vdisks = [d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk)]
        images = [os.environ[variable] for variable in quirks.get("guest_images", [])]
        if not quirks.get("independent"):
            for index, (vdisk, (capacity, seed)) in enumerate(zip(sorted(vdisks, key=lambda d: d.key), disks)):
                image = os.path.join(LAB, "disks", f"{name}-{vdisk.key}.qcow2")
                if name in NFS_VMS:  # the vmdk descriptor on the datastore, where vCenter says the disk is
                    image = os.path.join(LAB, NFS_DATASTORE, vdisk.backing.fileName.split("] ", 1)[1])
                entry["disks"][str(vdisk.key)] = {"image": image, "capacity": capacity, "seed_mib": seed,
                                                  "file": vdisk.backing.fileName}  # fmt: skip
                if index < len(images):
                    entry["disks"][str(vdisk.key)]["source_image"] = images[index]
        if images:
            # A Linux guest names each vmxnet3 by its PCI slot (ens192): the addresses set for that name are the
            # NIC's. A Windows guest's adapters are taken in the VM's NIC order; its tools say "manual".
            network = guest_network(images[0])
            windows = quirks.get("guest_id", "").startswith("windows")
            found = (
                network["adapters"] if windows else [network["nics"].get(f"ens{s}") for s in quirks["vmxnet3_slots"]]
            )
            nics = {mac: addresses for mac, addresses in zip(macs, found) if addresses}
            if nics:
                tools[vm._moId] = {"nics": nics, "origin": "manual" if windows else "",
                                   "gateway": network["gateway"], "dns": network["dns"]}  # fmt: skip
        lab["vms"][name] = entry
    post_tools(host, port, tools)
    os.makedirs(os.path.join(LAB, "disks"), exist_ok=True)
    fd = os.open(os.path.join(LAB, "lab.json"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(lab, handle, indent=1)
    Disconnect(si)


if __name__ == "__main__":
    sys.exit(main())
