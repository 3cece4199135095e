#!/usr/bin/env bash
# Build the zoo's UEFI guest: a Debian 12 disk shaped as an estate's VMware VM has it, nothing in it
# made for our tools:
#   - UEFI on GPT: an ESP (FAT) laid out as Debian's installer leaves it (shim, GRUB and its
#     grub.cfg stub in EFI/debian, no EFI/BOOT fallback: the VM boots from its NVRAM entry);
#   - a separate /boot (ext4), the root on LVM (vg0/root, XFS) and a swap LV, all mounted by the
#     installer's names (UUIDs, /dev/mapper);
#   - Debian's full kernel with the initramfs defaults (MODULES=most), "quiet", no serial console;
#   - open-vm-tools, and ifupdown with a static IPv4 on ens192 (the vmxnet3 in PCI slot 192).
# The disk is a raw 3 GiB sparse image assembled by libguestfs (no loop devices, no mounts on the host).
# Cached by the hash of this script; prints the image's path. ~6-8 min on a 2-core machine the first time.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lab/guest/common.sh
. "$HERE/common.sh"
guest_build uefi-guest "$HERE/build-uefi.sh"
echo "[uefi-guest] debootstrap bookworm from $mirror" >&2
debootstrap --variant=minbase \
  --include=systemd-sysv,linux-image-amd64,grub-efi-amd64,grub-efi-amd64-signed,shim-signed,lvm2,xfsprogs,ifupdown,open-vm-tools,initramfs-tools,kmod,udev \
  bookworm "$tree" "$mirror" >"$work/debootstrap.log" 2>&1 \
  || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }

echo "uefi-guest" >"$tree/etc/hostname"
printf 'auto lo\niface lo inet loopback\n\nauto ens192\niface ens192 inet static\n    address 10.10.1.50/24\n    gateway 10.10.1.1\n' \
  >"$tree/etc/network/interfaces"
sed -i -e 's/^GRUB_TIMEOUT=.*/GRUB_TIMEOUT=1/' "$tree/etc/default/grub"
echo "GRUB_DISABLE_OS_PROBER=true" >>"$tree/etc/default/grub"
rm -rf "$tree"/var/cache/apt/archives/*.deb "$tree"/var/lib/apt/lists/*
tar -C "$tree" --numeric-owner -cf "$work/tree.tar" .

echo "[uefi-guest] assembling the disk with libguestfs" >&2
truncate -s 3G "$work/disk.raw"
# fstab and the grub install need the file systems' UUIDs, which exist once they are made: the
# script writes fstab inside the appliance, from blkid.
guestfish --rw -a "$work/disk.raw" >"$work/guestfish.log" 2>&1 <<GF || { tail -n 40 "$work/guestfish.log" >&2; exit 1; }
run
part-init /dev/sda gpt
part-add /dev/sda p 2048 133119
part-add /dev/sda p 133120 657407
part-add /dev/sda p 657408 -34
part-set-gpt-type /dev/sda 1 C12A7328-F81F-11D2-BA4B-00A0C93EC93B
part-set-gpt-type /dev/sda 3 E6D6D379-F507-44C2-A23C-238F2A3DF928
mkfs vfat /dev/sda1
mkfs ext4 /dev/sda2
pvcreate /dev/sda3
vgcreate vg0 /dev/sda3
lvcreate root vg0 2200
lvcreate swap vg0 128
mkfs xfs /dev/vg0/root
mkswap /dev/vg0/swap
mount /dev/vg0/root /
mkdir /boot
mount /dev/sda2 /boot
mkdir /boot/efi
mount /dev/sda1 /boot/efi
tar-in $work/tree.tar / xattrs:true
sh "printf '/dev/mapper/vg0-root / xfs defaults 0 0\nUUID=%s /boot ext4 defaults 0 2\nUUID=%s /boot/efi vfat umask=0077 0 1\n/dev/mapper/vg0-swap none swap sw 0 0\n' \$(blkid -s UUID -o value /dev/sda2) \$(blkid -s UUID -o value /dev/sda1) > /etc/fstab"
sh "update-initramfs -u -k all"
sh "grub-install --target=x86_64-efi --efi-directory=/boot/efi --bootloader-id=debian --no-nvram"
sh "update-grub"
GF
# The ESP must be as the installer leaves it, or the fallback proof proves nothing.
esp=$(virt-ls -R -a "$work/disk.raw" -m /dev/sda1 /)
echo "$esp" | grep -q '^EFI/debian/shimx64.efi$' || { echo "[uefi-guest] no shim in EFI/debian: $esp" >&2; exit 1; }
if echo "$esp" | grep -qi '^EFI/BOOT'; then echo "[uefi-guest] the ESP has a fallback loader" >&2; exit 1; fi
guest_done uefi-guest
