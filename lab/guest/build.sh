#!/usr/bin/env bash
# Build the lab guest: a small bootable Debian 12 disk set up the way a VMware
# guest has it, so that virt-v2v-in-place has real work to do and the boot check
# has something to prove:
#   - its initramfs holds the VMware drivers (vmw_pvscsi, mptspi, ata_piix,
#     vmxnet3) and none of virtio's, so it cannot find its disk on KVM as built;
#   - /etc/fstab names the root disk /dev/sda1, which is /dev/vda1 on virtio
#     (GRUB keeps Debian's root=UUID=: virt-v2v regenerates grub.cfg inside its
#     appliance, where a /dev/sdX name would be baked in again);
#   - /etc/network/interfaces configures ens192 (by DHCP: isc-dhcp-client, which minbase would leave out
#     as a Recommends of ifupdown), the name of the vmxnet3 in PCI slot 192 on VMware;
#   - rootdelay=20, so an unconverted boot gives up in seconds, not minutes.
# Nothing in it speaks to the boot check: the check sees its DHCP from the NIC's MAC.
# The disk is a raw 1 GiB image with one MBR partition, assembled by libguestfs
# (no loop devices, no root-only mounts). Cached by the hash of this script;
# prints the image's path. ~3-4 min on a 2-core machine the first time.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lab/guest/common.sh
. "$HERE/common.sh"
guest_build lab-guest "$HERE/build.sh"
echo "[guest] debootstrap bookworm from $mirror" >&2
debootstrap --variant=minbase --include=systemd-sysv,linux-image-cloud-amd64,grub-pc,ifupdown,isc-dhcp-client,initramfs-tools,kmod,udev \
  bookworm "$tree" "$mirror" >"$work/debootstrap.log" 2>&1 \
  || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }

echo "lab-guest" >"$tree/etc/hostname"
echo "/dev/sda1 / ext4 errors=remount-ro 0 1" >"$tree/etc/fstab"
printf 'auto lo\niface lo inet loopback\n\nauto ens192\niface ens192 inet dhcp\n' >"$tree/etc/network/interfaces"
echo "MODULES=list" >"$tree/etc/initramfs-tools/conf.d/xms-vmware.conf"
printf '%s\n' vmw_pvscsi mptspi ata_piix sd_mod vmxnet3 >>"$tree/etc/initramfs-tools/modules"
sed -i -e 's/^GRUB_TIMEOUT=.*/GRUB_TIMEOUT=0/' \
  -e 's/^GRUB_CMDLINE_LINUX=.*/GRUB_CMDLINE_LINUX="console=tty0 console=ttyS0,115200 panic=-1 rootdelay=20"/' \
  "$tree/etc/default/grub"
echo "GRUB_DISABLE_OS_PROBER=true" >>"$tree/etc/default/grub"
rm -rf "$tree"/var/cache/apt/archives/*.deb "$tree"/var/lib/apt/lists/*
tar -C "$tree" --numeric-owner -cf "$work/tree.tar" .

echo "[guest] assembling the disk with libguestfs" >&2
truncate -s 1G "$work/disk.raw"
# grub-install runs inside the appliance, where the kernel may name the guest's disk /dev/sdb and
# the appliance's own /dev/sda (libguestfs translates names in its calls, not in `sh`): the disk
# is the one grub-probe finds under /boot.
guestfish --rw -a "$work/disk.raw" >"$work/guestfish.log" 2>&1 <<GF || { tail -n 30 "$work/guestfish.log" >&2; exit 1; }
run
part-init /dev/sda mbr
part-add /dev/sda p 2048 -1
part-set-bootable /dev/sda 1 true
mkfs ext4 /dev/sda1
mount /dev/sda1 /
tar-in $work/tree.tar / xattrs:true
sh "update-initramfs -u -k all"
sh "grub-install --target=i386-pc \$(grub-probe --target=disk /boot)"
sh "update-grub"
GF
# The disk must really be VMware-shaped, or the conversion test proves nothing.
grep -q sda1 <(virt-cat -a "$work/disk.raw" /etc/fstab) || { echo "[guest] fstab does not name /dev/sda1" >&2; exit 1; }
boot_files=$(virt-ls -a "$work/disk.raw" /boot)
echo "$boot_files" | grep -q '^initrd.img-' || { echo "[guest] no initramfs in /boot" >&2; exit 1; }
guest_done lab-guest
