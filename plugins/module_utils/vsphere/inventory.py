"""Finding the source VM, describing it, and the source-side preflight verdict.

Properties are read in one property-collector call (not attribute by
attribute): it is one round trip, and unset properties (a VM without
snapshots) are simply absent instead of an error.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional, Tuple

from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere.errors import VmNotFoundError
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere.faults import VSphereFault

try:
    from pyVmomi import vim, vmodl
except ImportError:  # the client reports it
    vim = vmodl = None

PROPERTIES = ["name", "config", "runtime.powerState", "runtime.consolidationNeeded", "guest.toolsRunningStatus",
              "snapshot", "guest.net", "guest.ipStack"]  # fmt: skip
MIN_HW_VERSION = 7  # CBT needs virtual hardware 7 or later
NOT_SET_BY_GUEST = ("dhcp", "linklayer", "random")  # VMware Tools' origins of addresses the guest did not configure
GiB = 1 << 30
# A seed's snapshot takes every write the guest makes while the seed reads, so its delta grows with the
# seed, and a datastore that fills stuns the VM. Preflight fails below this share of the VM's disks on a
# datastore free, and warns below the second.
DELTA_FAIL_SHARE, DELTA_WARN_SHARE = 0.10, 0.25


# vSphere guest OS ids of families virt-v2v cannot convert (it converts Linux and Windows guests), and the
# ids that declare no family at all. A warning, not a failure: the id is what someone chose when the VM was
# made, and the cutover's conversion inspects the disks themselves.
UNCONVERTIBLE_GUEST_PREFIXES = ("freebsd", "solaris", "darwin", "netware", "os2", "dos", "sco", "unixware",
                                "openserver", "ecomstation", "vmkernel", "other")  # fmt: skip
LINUX_OTHER_IDS = ("otherlinux", "other24xlinux", "other26xlinux", "other3xlinux", "other4xlinux", "other5xlinux",
                   "other6xlinux")  # fmt: skip

# How a BIOS meets the disk controllers (and so the order disks boot in when the VM names none):
# IDE first, then SATA (AHCI), SCSI (any flavour: LSI Logic, LSI Logic SAS, PVSCSI, BusLogic), NVMe.
BUS_RANK = {"ide": 0, "sata": 1, "scsi": 2, "nvme": 3}


@dataclass
class Disk:
    key: int
    label: str
    capacity: int
    backing_file: str
    datastore: str
    controller: str
    unit: int
    thin: bool
    disk_mode: str
    rdm_mode: Optional[str]  # physicalMode | virtualMode | None
    change_id: Optional[str]
    bus: str = "scsi"  # ide | sata | scsi | nvme
    bus_number: int = 0

    @property
    def independent(self) -> bool:
        return self.disk_mode.startswith("independent")


@dataclass
class Nic:
    key: int
    mac: str
    network: str
    adapter: str
    pci_slot: Optional[int] = None  # vSphere's slotInfo.pciSlotNumber: the slot number the guest's ACPI sees
    # The IPv4 addresses VMware Tools sees on it now (``10.10.1.50/24``), those a DHCP server leased excepted:
    # the addresses the guest may hold statically (empty while the guest or its tools are not running).
    addresses: Tuple[str, ...] = ()

    @property
    def guest_name(self) -> Optional[str]:
        """The name a Linux guest's predictable naming gives this NIC on VMware (``ens`` + its slot)."""
        return f"ens{self.pci_slot}" if self.pci_slot else None


@dataclass
class VmInventory:
    name: str
    moref: str
    instance_uuid: str
    vcpus: int
    memory_mb: int
    firmware: str
    guest_id: str
    hw_version: int
    tools_running: bool
    power_state: str
    cbt_enabled: bool
    snapshot_count: int
    disks: List[Disk] = field(default_factory=list)
    nics: List[Nic] = field(default_factory=list)
    oldest_snapshot: Optional[datetime] = None  # when the VM's oldest snapshot was taken
    consolidation_needed: bool = False
    # The guest's IPv4 default gateway and DNS servers, as VMware Tools sees them now (guest_routing)
    guest_gateway: str = ""
    guest_dns: Tuple[str, ...] = ()
    vtpm: bool = False  # a virtual TPM: its state (and the keys it seals) stays on vSphere
    guest_full_name: str = ""  # the guest OS as the VM's configuration names it ("Red Hat Enterprise Linux 9 (64-bit)")


@dataclass(frozen=True)
class DatastoreSpace:
    """A datastore that holds disks of the VM: its space now."""

    name: str
    capacity: int
    free: int


@dataclass
class Verdict:
    status: str  # pass | warn | fail
    reasons: List[str]


def find_vm(client, *, name=None, datacenter=None, folder=None, uuid=None, moref=None):
    """The VM by moref, instance UUID, or name (within a datacenter/folder); VmNotFoundError names the parameter."""
    content = client.content
    if moref:
        vm = vim.VirtualMachine(moref, client.si._stub)
        try:
            properties(client, vm, ["name"])
        except VSphereFault as err:
            if not isinstance(err.fault, vmodl.fault.ManagedObjectNotFound):
                raise
            vm = None
        if vm is None:
            raise VmNotFoundError(f"no VM has moref '{moref}'", parameter="vm_moref")
        return vm
    if uuid:
        vm = content.searchIndex.FindByUuid(None, uuid, True, True)
        if vm is None:
            raise VmNotFoundError(f"no VM has instance UUID '{uuid}'", parameter="vm_uuid")
        return vm
    root = content.rootFolder
    if datacenter:
        root = next((dc for dc in root.childEntity if isinstance(dc, vim.Datacenter) and dc.name == datacenter), None)
        if root is None:
            raise VmNotFoundError(f"no datacenter is named '{datacenter}'", parameter="datacenter")
    if folder:
        found = content.searchIndex.FindByInventoryPath(folder.strip("/"))
        if not isinstance(found, vim.Folder):
            raise VmNotFoundError(f"no VM folder at '{folder}'", parameter="folder")
        root = found
    matches = [vm for vm, props in objects_in(client, root, vim.VirtualMachine, ["name"]) if props.get("name") == name]
    if not matches:
        where = f" in datacenter '{datacenter}'" if datacenter else ""
        raise VmNotFoundError(
            f"no VM is named '{name}'{where}", parameter="vm_name", hint="Check the name, or use vm_uuid"
        )
    if len(matches) > 1:
        raise VmNotFoundError(
            f"{len(matches)} VMs are named '{name}'",
            parameter="vm_name",
            hint="Narrow it with datacenter or folder, or use vm_uuid",
        )
    return matches[0]


def objects_in(client, root, kind, paths: List[str]) -> List[Tuple[Any, Dict[str, Any]]]:
    """Every ``kind`` object under ``root`` with its ``paths``, in one property-collector query.

    Not one call per object: a vCenter holds thousands of VMs and hundreds of port groups, and a
    lookup by name that asked each of them would cost a round trip apiece on every sync. Large
    answers come in pages (RetrievePropertiesEx, then ContinueRetrievePropertiesEx)."""
    pc = client.content.propertyCollector
    view = client.content.viewManager.CreateContainerView(root, [kind], True)
    try:
        traverse = vmodl.query.PropertyCollector.TraversalSpec(name="view", path="view", skip=False,
                                                               type=vim.view.ContainerView)  # fmt: skip
        spec = vmodl.query.PropertyCollector.FilterSpec(
            objectSet=[vmodl.query.PropertyCollector.ObjectSpec(obj=view, skip=True, selectSet=[traverse])],
            propSet=[vmodl.query.PropertyCollector.PropertySpec(type=kind, pathSet=paths)],
        )
        found: List[Tuple[Any, Dict[str, Any]]] = []
        page = pc.RetrievePropertiesEx([spec], vmodl.query.PropertyCollector.RetrieveOptions())
        while page:
            found.extend((o.obj, {p.name: p.val for p in o.propSet or []}) for o in page.objects or [])
            page = pc.ContinueRetrievePropertiesEx(page.token) if page.token else None
        return found
    finally:
        view.Destroy()


def properties(client, obj, paths: List[str]) -> Dict[str, Any]:
    spec = vmodl.query.PropertyCollector.FilterSpec(
        objectSet=[vmodl.query.PropertyCollector.ObjectSpec(obj=obj)],
        propSet=[vmodl.query.PropertyCollector.PropertySpec(type=type(obj), pathSet=paths)],
    )
    result = client.content.propertyCollector.RetrieveContents([spec])
    return {p.name: p.val for p in result[0].propSet} if result else {}


def inventory(client, vm) -> VmInventory:
    props = properties(client, vm, PROPERTIES)
    config = props["config"]
    devices = config.hardware.device
    controllers = {d.key: d for d in devices if isinstance(d, vim.vm.device.VirtualController)}
    disks, nics = [], []
    addresses = guest_addresses(props.get("guest.net") or [])
    for dev in devices:
        if isinstance(dev, vim.vm.device.VirtualDisk):
            backing = dev.backing
            rdm = getattr(backing, "compatibilityMode", None) if isinstance(
                backing, vim.vm.device.VirtualDisk.RawDiskMappingVer1BackingInfo) else None  # fmt: skip
            controller = controllers.get(dev.controllerKey)
            disks.append(Disk(
                key=dev.key, label=dev.deviceInfo.label if dev.deviceInfo else f"disk {dev.key}",
                capacity=dev.capacityInBytes or dev.capacityInKB * 1024,
                backing_file=getattr(backing, "fileName", "") or "",
                datastore=backing.datastore.name if getattr(backing, "datastore", None) else "",
                controller=type(controller).__name__.rsplit(".", 1)[-1] if controller else "",
                unit=dev.unitNumber or 0, thin=bool(getattr(backing, "thinProvisioned", False)),
                disk_mode=getattr(backing, "diskMode", "persistent") or "persistent", rdm_mode=rdm,
                change_id=getattr(backing, "changeId", None) or None, bus=_bus(controller),
                bus_number=getattr(controller, "busNumber", 0) or 0,
            ))  # fmt: skip
        elif isinstance(dev, vim.vm.device.VirtualEthernetCard):
            network = _network_name(client, dev.backing) or (dev.deviceInfo.summary if dev.deviceInfo else "")
            slot = getattr(dev.slotInfo, "pciSlotNumber", None) if dev.slotInfo else None
            mac = (dev.macAddress or "").lower()
            nics.append(Nic(key=dev.key, mac=mac, network=network,
                            adapter=type(dev).__name__.rsplit(".", 1)[-1].replace("Virtual", "").lower(),
                            pci_slot=slot, addresses=addresses.get(mac, ())))  # fmt: skip
    snapshot = props.get("snapshot")
    gateway, dns = guest_routing(props.get("guest.ipStack") or [])
    return VmInventory(
        name=props["name"], moref=vm._moId, instance_uuid=config.instanceUuid or config.uuid,
        vcpus=config.hardware.numCPU, memory_mb=config.hardware.memoryMB, firmware=config.firmware or "bios",
        guest_id=config.guestId or "", hw_version=_hw_version(config.version),
        tools_running=props.get("guest.toolsRunningStatus") == "guestToolsRunning",
        power_state=str(props.get("runtime.powerState")), cbt_enabled=bool(config.changeTrackingEnabled),
        snapshot_count=_count(snapshot.rootSnapshotList) if snapshot else 0,
        disks=boot_order(disks, _boot_disk_keys(config)), nics=nics,
        oldest_snapshot=min(_created(snapshot.rootSnapshotList), default=None) if snapshot else None,
        consolidation_needed=bool(props.get("runtime.consolidationNeeded")),
        guest_gateway=gateway, guest_dns=dns, vtpm=any(isinstance(d, vim.vm.device.VirtualTPM) for d in devices),
        guest_full_name=config.guestFullName or "",
    )  # fmt: skip


def guest_addresses(net) -> Dict[str, Tuple[str, ...]]:
    """Per MAC, the IPv4 addresses VMware Tools reports in ``guest.net`` (``10.10.1.50/24``), leases excepted.

    An address's origin is optional in the API: Windows' tools say ``manual`` or ``dhcp``, Linux's
    often say nothing. What a guest did not set itself is left out: leases (``dhcp``) and the
    addresses a guest picks when nothing else answers (``linklayer``, ``random``, 169.254.0.0/16);
    the conversion finds which of the rest the guest's configuration sets (virt_v2v.identity_script).
    """
    found: Dict[str, Tuple[str, ...]] = {}
    for info in net:
        config = getattr(info, "ipConfig", None)
        if not info.macAddress or config is None:
            continue
        addresses = tuple(
            f"{a.ipAddress}/{a.prefixLength}"
            for a in config.ipAddress or []
            if a.prefixLength and a.origin not in NOT_SET_BY_GUEST and _ipv4_not_link_local(a.ipAddress)
        )
        if addresses:
            found[info.macAddress.lower()] = addresses
    return found


def guest_routing(stacks) -> Tuple[str, Tuple[str, ...]]:
    """The IPv4 default gateway and DNS servers VMware Tools reports in ``guest.ipStack``.

    A Windows guest's static addresses are set again on its new adapters at first boot, with the gateway and
    DNS servers they had (virt_v2v.static_ip_options); only the first IP stack is read (guests run one).
    """
    for stack in stacks[:1]:
        routes = getattr(getattr(stack, "ipRouteConfig", None), "ipRoute", None) or []
        defaults = [r.gateway for r in routes if r.network == "0.0.0.0" and not r.prefixLength and r.gateway]
        gateway = next((g.ipAddress for g in defaults if g.ipAddress), "")
        servers = getattr(getattr(stack, "dnsConfig", None), "ipAddress", None) or []
        return gateway, tuple(s for s in servers if _ipv4_not_link_local(s))
    return "", ()


def _ipv4_not_link_local(text: str) -> bool:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    return address.version == 4 and not address.is_link_local


def datastore_space(client, vm) -> List[DatastoreSpace]:
    """Capacity and free space of each datastore the VM's files are on, as vCenter reports them."""
    found = []
    for ref in properties(client, vm, ["datastore"]).get("datastore") or []:
        props = properties(client, ref, ["name", "summary.capacity", "summary.freeSpace"])
        found.append(DatastoreSpace(props["name"], props["summary.capacity"], props["summary.freeSpace"]))
    return found


def boot_order(disks: List[Disk], boot_keys: List[int]) -> List[Disk]:
    """The disks in the order the VM boots them: the first one becomes the instance's boot volume.

    The VM's own boot order (``bootOptions.bootOrder``) comes first, in its order; the other
    disks follow as the BIOS meets them: by bus type (IDE, SATA, SCSI, NVMe), then the
    controller's bus number, then the unit. Never by controller class name: an LSI Logic SAS
    boot disk beside a PVSCSI data disk must stay first.
    """
    rank = {key: i for i, key in enumerate(boot_keys)}
    return sorted(disks, key=lambda d: (rank.get(d.key, len(rank)), BUS_RANK.get(d.bus, 9), d.bus_number, d.unit,
                                        d.key))  # fmt: skip


def _boot_disk_keys(config) -> List[int]:
    options = getattr(config, "bootOptions", None)
    return [
        entry.deviceKey
        for entry in (getattr(options, "bootOrder", None) or [])
        if isinstance(entry, vim.vm.BootOptions.BootableDiskDevice)
    ]


def _bus(controller) -> str:
    if isinstance(controller, vim.vm.device.VirtualIDEController):
        return "ide"
    if isinstance(controller, vim.vm.device.VirtualSATAController):
        return "sata"
    if isinstance(controller, vim.vm.device.VirtualNVMEController):
        return "nvme"
    return "scsi"


def _network_name(client, backing) -> str:
    """The port group or network a NIC is on, by name (what a network map is written in)."""
    if isinstance(backing, vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo):
        key = backing.port.portgroupKey
        portgroups = objects_in(client, client.content.rootFolder, vim.dvs.DistributedVirtualPortgroup, ["key", "name"])
        return next((props.get("name", "") for _pg, props in portgroups if props.get("key") == key), "")
    return getattr(backing, "deviceName", "") or ""


def _hw_version(text: str) -> int:
    try:
        return int(str(text).split("-", 1)[1])
    except (IndexError, ValueError):
        return 0


def _count(trees) -> int:
    return sum(1 + _count(t.childSnapshotList) for t in trees or [])


def _created(trees) -> List[datetime]:
    return [when for t in trees or [] for when in [t.createTime, *_created(t.childSnapshotList)]]


def preflight(inv: VmInventory, space: List[DatastoreSpace], now: Optional[datetime] = None) -> Verdict:
    """Can this VM be migrated warm? Fail blocks it; Warn is worth reading first."""
    fails, warns = [], []
    if inv.hw_version and inv.hw_version < MIN_HW_VERSION:
        fails.append(f"virtual hardware {inv.hw_version} is below {MIN_HW_VERSION}, the first with CBT: upgrade it")
    for disk in inv.disks:
        if disk.rdm_mode == "physicalMode":
            fails.append(f"{disk.label} is a physical-mode RDM: snapshots and CBT cannot cover it")
        elif disk.independent:
            fails.append(f"{disk.label} is independent ({disk.disk_mode}): snapshots skip it, so it cannot be synced")
    if inv.consolidation_needed:
        fails.append("vCenter reports that the VM's disks need consolidation (a snapshot removal left delta files"
                     " behind): consolidate them first (Snapshots > Consolidate); every sync takes and removes a"
                     " snapshot on that chain")  # fmt: skip
    fails_space, warns_space = _space_verdicts(inv, space)
    fails.extend(fails_space)
    if inv.snapshot_count:
        age = ""
        if inv.oldest_snapshot:
            days = ((now or datetime.now(timezone.utc)) - inv.oldest_snapshot).days
            age = f", the oldest taken {inv.oldest_snapshot:%Y-%m-%d} ({days} day(s) ago)"
        warns.append(f"the VM has {inv.snapshot_count} snapshot(s){age}: delete or consolidate them before the"
                     " seed; every sync reads through the chain and a long one slows it")  # fmt: skip
    warns.extend(warns_space)
    guest = inv.guest_id.lower()
    if guest.startswith(UNCONVERTIBLE_GUEST_PREFIXES) and not guest.startswith(LINUX_OTHER_IDS):
        warns.append(f"the VM's guest OS is declared as '{inv.guest_full_name or inv.guest_id}': virt-v2v converts"
                     " Linux and Windows guests only; if that is right, the cutover's conversion will fail (check the"
                     " guest, or correct the VM's guest OS setting)")  # fmt: skip
    if not inv.tools_running and inv.power_state == "poweredOn":
        warns.append("VMware Tools is not running: cutover cannot shut the guest down cleanly (power-off fallback)")
    status = "fail" if fails else ("warn" if warns else "pass")
    return Verdict(status, fails + warns)


def _space_verdicts(inv: VmInventory, space: List[DatastoreSpace]) -> Tuple[List[str], List[str]]:
    fails, warns = [], []
    for ds in space:
        size = sum(d.capacity for d in inv.disks if d.datastore == ds.name)
        if not size:
            continue
        said = (f"datastore '{ds.name}' has {ds.free / GiB:.1f} GiB free for the seed snapshot's delta of"
                f" {size / GiB:.1f} GiB of disks")  # fmt: skip
        if ds.free < DELTA_FAIL_SHARE * size:
            fails.append(f"{said}, under {DELTA_FAIL_SHARE:.0%} of them: a full datastore stuns the VM; free at least"
                         f" {DELTA_FAIL_SHARE * size / GiB:.1f} GiB there (or move the VM's disks) first")  # fmt: skip
        elif ds.free < DELTA_WARN_SHARE * size:
            warns.append(f"{said}, under {DELTA_WARN_SHARE:.0%} of them: a guest that writes much during the seed"
                         " could fill it; watch it while the seed runs")  # fmt: skip
    return fails, warns
