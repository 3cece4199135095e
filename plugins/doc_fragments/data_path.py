"""Documentation of the data-path options (mirrors argument_spec.data_path_argument_spec)."""


class ModuleDocFragment:
    DOCUMENTATION = r"""
requirements:
  - libnbd's Python binding (python3-libnbd)
  - nbdkit with its Python plugin (or its vddk plugin), qemu-img
  - os-brick >= 6.0.0 with attach_mode brick
  - VMware's VDDK in vddk_libdir, except with the NFS reader (O(reader=nfs)), which needs qemu-nbd instead
options:
  state_dir:
    description:
      - A directory on the conversion host for resume journals and locks (mode 0700).
    type: path
    default: /var/lib/xms-warm-migration
  vddk_libdir:
    description:
      - Where VMware's VDDK is unpacked on the conversion host (C(lib64/libvixDiskLib.so.N) below it), for the
        VDDK readers of O(reader).
      - VDDK is not redistributable; see C(docs/conversion-host.md) for how to obtain it, as for virt-v2v.
    type: path
    default: /opt/vmware-vix-disklib-distrib
  vddk_transports:
    description:
      - VDDK transport modes to try, colon-separated (for example C(hotadd:nbdssl)). Default is VDDK's choice.
    type: str
  reader:
    description:
      - What reads the source disks.
      - C(nbdkit-vddk) is nbdkit's own C(vddk) plugin (C(nbdkit-vddk-plugin) on RHEL and Fedora; Debian and Ubuntu
        do not ship it), through VMware's VDDK in O(vddk_libdir).
      - C(xms) is the collection's reader, run by nbdkit's Python plugin host (C(nbdkit-plugin-python)); it loads
        VDDK from O(vddk_libdir) and reads each disk over several connections at once. Both take the same parameters.
      - C(nfs) needs no VDDK, for VMs whose disks are all on NFS datastores. C(qemu-nbd) reads the disk file the
        sync's snapshot froze (with the deltas of older snapshots below it) from the datastore mounted read-only on
        this host; the changed areas still come from vSphere's API. See O(nfs_mounts) for where the datastore is
        mounted, and C(docs/conversion-host.md) for what the NFS export must allow.
      - C(auto) takes nbdkit's own plugin where the host has one, otherwise the collection's; with no VDDK in
        O(vddk_libdir), the NFS reader when every disk of the VM is on an NFS datastore.
    type: str
    choices: [auto, nbdkit-vddk, xms, nfs]
    default: auto
    aliases: [vddk_reader]
  nfs_mounts:
    description:
      - For the NFS reader, where NFS datastores are mounted on this host, a mount point by datastore name
        (for example C(/mnt/nfs-ds01) for datastore C(nfs-ds01)). Mount them read-only.
      - A datastore not named here is read where its export (the server and path vSphere reports) is mounted
        already, or else mounted read-only under O(state_dir) (C(datastores/<name>)) and left mounted for the next
        sync. That needs the NFS client (C(nfs-common), C(nfs-utils)) and an export this host's address may mount.
    type: dict
    default: {}
  attach_mode:
    description:
      - How the conversion host writes to the target volumes.
      - C(brick) attaches them to this host directly (Cinder attachment API and os-brick).
        A volume of an encrypted volume type is written through LUKS with its key from the key manager
        (the migration's user must be allowed to read its project's secrets), and a qcow2 volume (an NFS
        volume that is encrypted or was snapshotted) through the qcow2 format, both by C(qemu-storage-daemon).
        Protocols where os-brick gives no path (RBD without krbd) are refused before any write.
      - C(nova) attaches them to the conversion host instance O(conversion_server) in the target cloud,
        whose hypervisor presents every volume as a plain disk, encrypted or not.
    type: str
    choices: [brick, nova]
    default: brick
  conversion_server:
    description:
      - The Nova server (name or id) of the conversion host, for O(attach_mode=nova).
    type: str
  bandwidth_limit:
    description:
      - Upper bound on the copy rate in bytes per second, so a production source is not saturated.
      - One bound for the whole run of one VM, shared by its disks when they are copied at once.
    type: int
  parallel_disks:
    description:
      - How many disks of one VM are copied at once, all from the one snapshot (vSphere serves each
        disk at about 1 Gbps, so a VM's speed comes from reading its disks side by side).
      - Each copy holds up to 32 MiB of buffers on the conversion host.
      - A disk with nothing to copy costs no attachment and no nbdkit, whatever this says.
    type: int
    default: 4
"""
