"""Shape vcsim's generated VMs into the lab's VMs, then write lab.json.

vcsim creates VMs with one empty disk; the lab renames thirteen of them and gives
them the disks, NICs, firmware and quirks the tests need. The disk contents live in
qcow2 images that cbt.py serves (vcsim's own disk files stay empty).

A VM whose boot disk is a lab guest image gets the VMware Tools view of a running
guest: the addresses its own network configuration sets, read from the image, posted
to the simulator (/lab/tools), which reports them in guest.net while the VM is on.
"""

import hashlib
import ipaddress
import json
import os
import ssl
import subprocess
import sys
import time
import urllib.request
from urllib.parse import unquote, urlsplit

from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim

LAB = os.path.join(os.environ.get("XMS_LAB_DIR", "/var/lib/xms-lab"), "vsphere")
MiB = 1 << 20
LAB_VMS = {
    # name: (disks as (capacity, MiB of data written at start), MAC, quirks)
    "lab-vm-1": ([(64 * MiB, 24), (32 * MiB, 8)], "00:50:56:01:00:01", {}),
    "lab-vm-2": ([(48 * MiB, 16), (32 * MiB, 4)], "00:50:56:01:00:02", {}),
    "lab-vm-stuck": ([(16 * MiB, 4)], "00:50:56:01:00:03", {"guest_ignores_shutdown": True}),
    "lab-vm-big": ([(3 << 40, 4)], "00:50:56:01:00:04", {}),
    "lab-vm-indep": ([(16 * MiB, 0)], "00:50:56:01:00:06", {"independent": True}),
    # A bootable Debian guest set up like a VMware one (lab/guest/build.sh) plus a data disk: for cutover.
    # Boot disk on an LSI Logic SAS controller, data disk on a PVSCSI one: a very common layout. Its NIC is
    # a vmxnet3 in PCI slot 192, as vCenter places one: the guest names it ens192 (its ifupdown does).
    "lab-vm-linux": (
        [(1 << 30, 0), (16 * MiB, 4)],
        "00:50:56:01:00:07",
        {"guest_image": "XMS_LAB_GUEST_IMAGE", "controllers": ["sas", "pvscsi"], "vmxnet3_slot": 192},
    ),
    # The zoo's UEFI guest (lab/guest/build-uefi.sh): firmware efi, its disk on a PVSCSI controller, a vmxnet3
    # in slot 192 (ens192, with the static 10.10.1.50/24 its ifupdown sets: lab-net-a's subnet).
    "lab-vm-uefi": (
        [(3 << 30, 0)],
        "00:50:56:01:00:0a",
        {"guest_image": "XMS_LAB_UEFI_IMAGE", "controllers": ["pvscsi"], "vmxnet3_slot": 192, "firmware": "efi"},
    ),
    # For the source-event tests (CBT reset, grown disks...): what they leave behind touches no other test.
    "lab-vm-events": ([(48 * MiB, 16), (32 * MiB, 4)], "00:50:56:01:00:08", {}),
    # Controller layouts for the boot-order tests; its disks hold no data (the lab serves none).
    "lab-vm-layout": ([], "00:50:56:01:00:09", {}),
    # The wave benchmark's VMs (bench/wave_bench.py fills their disks): empty, so a lab start stays cheap.
    **{f"lab-vm-bench-{i}": ([(2048 * MiB, 0), (2048 * MiB, 0)], f"00:50:56:01:01:0{i}", {}) for i in range(1, 5)},
}


def wait(task):
    while task.info.state not in ("success", "error"):
        time.sleep(0.05)
    if task.info.state == "error":
        raise SystemExit(f"vcsim task failed: {task.info.error}")
    return task.info.result


CONTROLLERS = {"sas": vim.vm.device.VirtualLsiLogicSASController, "pvscsi": vim.vm.device.ParaVirtualSCSIController}


def shape(vm, name, disks, mac, quirks):
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
    if quirks.get("vmxnet3_slot"):
        # vcsim's NIC is an e1000 in slot 32; vCenter keeps the slot an added device asks for.
        slot = vim.vm.device.VirtualDevice.PciBusSlotInfo(pciSlotNumber=quirks["vmxnet3_slot"])
        vmxnet3 = vim.vm.device.VirtualVmxnet3(key=-50, backing=nic.backing, slotInfo=slot, addressType="manual",
                                               macAddress=mac)  # fmt: skip
        changes.append(vim.vm.device.VirtualDeviceSpec(operation="remove", device=nic))
        changes.append(vim.vm.device.VirtualDeviceSpec(operation="add", device=vmxnet3))
    else:
        nic.addressType, nic.macAddress = "manual", mac
        changes.append(vim.vm.device.VirtualDeviceSpec(operation="edit", device=nic))
    wait(vm.ReconfigVM_Task(vim.vm.ConfigSpec(deviceChange=changes, firmware=quirks.get("firmware", "bios"))))


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


def configured_addresses(image):
    """The addresses the guest on ``image`` configures, read from the image itself (libguestfs: the guest
    never runs in the vSphere lab), cached beside it: the image's name holds its build's hash."""
    cache = image + ".addresses.json"
    if os.path.exists(cache):
        with open(cache) as handle:
            return json.load(handle)
    env = {**os.environ, "LIBGUESTFS_BACKEND": "direct"}
    accel = os.path.join(os.path.dirname(__file__), "..", "..", "plugins", "module_utils", "conversion", "accel.py")
    if subprocess.run([sys.executable, accel], capture_output=True, text=True, check=True).stdout.strip() != "kvm":
        env["LIBGUESTFS_BACKEND_SETTINGS"] = "force_tcg"
    read = subprocess.run(["virt-cat", "--format=raw", "-a", image, "/etc/network/interfaces"], env=env,
                          capture_output=True, text=True, check=False)  # fmt: skip
    found = ifupdown_static(read.stdout) if read.returncode == 0 else {}
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
        for name, (disks, mac, quirks) in LAB_VMS.items():
            if name not in by_name:
                shape(by_name[spare.pop(0)], name, disks, mac, quirks)
        by_name = {vm.name: vm for vm in view.view}
    der = ssl.PEM_cert_to_DER_cert(ssl.get_server_certificate((host, port)))
    thumbprint = ":".join(f"{b:02X}" for b in hashlib.sha1(der).digest())  # as VDDK and the adapter write it
    lab = {"hostname": host, "port": port, "username": user, "password": password, "thumbprint": thumbprint, "vms": {}}
    tools = {}
    for name, (disks, mac, quirks) in LAB_VMS.items():
        vm = by_name[name]
        entry = {"moref": vm._moId, "disks": {}, **{k: v for k, v in quirks.items() if k == "guest_ignores_shutdown"}}
        vdisks = [d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk)]
        if not quirks.get("independent"):
            for vdisk, (capacity, seed) in zip(sorted(vdisks, key=lambda d: d.key), disks):
                image = os.path.join(LAB, "disks", f"{name}-{vdisk.key}.qcow2")
                entry["disks"][str(vdisk.key)] = {"image": image, "capacity": capacity, "seed_mib": seed,
                                                  "file": vdisk.backing.fileName}  # fmt: skip
                if quirks.get("guest_image") and vdisk is min(vdisks, key=lambda d: d.key):
                    entry["disks"][str(vdisk.key)]["source_image"] = os.environ[quirks["guest_image"]]
        if quirks.get("guest_image"):
            # The guest names its vmxnet3 by its PCI slot (ens192): the addresses set for that name are the NIC's.
            configured = configured_addresses(os.environ[quirks["guest_image"]])
            if configured.get(f"ens{quirks.get('vmxnet3_slot')}"):
                tools[vm._moId] = {mac: configured[f"ens{quirks['vmxnet3_slot']}"]}
        lab["vms"][name] = entry
    post_tools(host, port, tools)
    os.makedirs(os.path.join(LAB, "disks"), exist_ok=True)
    fd = os.open(os.path.join(LAB, "lab.json"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(lab, handle, indent=1)
    Disconnect(si)


if __name__ == "__main__":
    sys.exit(main())
