#!/usr/bin/env bash
# Build the zoo's Debian 13 guest: two disks and two NICs, set up as an estate's VMware VM has them and
# nothing in them made for our tools:
#   - BIOS on GPT (a BIOS boot partition for GRUB), the root on ext4 mounted by UUID;
#   - a data disk (its own GPT, one ext4 partition) mounted at /srv/data by UUID from fstab, with no
#     "nofail": a guest that comes up without it stops in emergency mode;
#   - Debian's full kernel (6.12) with the initramfs defaults (MODULES=most: virtio's drivers are in it,
#     so an unconverted boot gets far: only its network identity is lost);
#   - NetworkManager with keyfiles: ens192 (the vmxnet3 in PCI slot 192) static 10.10.1.60/24 (lab-net-a's
#     subnet), ens224 (slot 224) by DHCP; open-vm-tools.
# Two raw sparse images assembled by libguestfs (no loop devices, no mounts on the host): the boot disk
# (2 GiB, the path printed) and the data disk beside it (<image>-data.img, 64 MiB). Cached by the hash of
# this script; ~3-4 min on a 2-core machine the first time.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lab/guest/common.sh
. "$HERE/common.sh"
guest_build trixie-guest "$HERE/build-trixie.sh"
echo "[trixie-guest] debootstrap trixie from $mirror" >&2
debootstrap --variant=minbase \
  --include=systemd-sysv,linux-image-amd64,grub-pc,network-manager,dbus,open-vm-tools,initramfs-tools,kmod,udev \
  trixie "$tree" "$mirror" >"$work/debootstrap.log" 2>&1 \
  || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }

# The file systems get their UUIDs here (set-uuid below), so fstab is written before the disk exists.
root_uuid=$(cat /proc/sys/kernel/random/uuid)
data_uuid=$(cat /proc/sys/kernel/random/uuid)
echo "trixie-guest" >"$tree/etc/hostname"
printf 'UUID=%s / ext4 errors=remount-ro 0 1\nUUID=%s /srv/data ext4 defaults 0 2\n' "$root_uuid" "$data_uuid" \
  >"$tree/etc/fstab"
mkdir -p "$tree/srv/data"
connections=$tree/etc/NetworkManager/system-connections
mkdir -p "$connections"
printf '[connection]\nid=ens192\nuuid=%s\ntype=ethernet\ninterface-name=ens192\n\n[ethernet]\n\n[ipv4]\nmethod=manual\naddress1=10.10.1.60/24,10.10.1.1\n\n[ipv6]\nmethod=auto\n' \
  "$(cat /proc/sys/kernel/random/uuid)" >"$connections/ens192.nmconnection"
printf '[connection]\nid=ens224\nuuid=%s\ntype=ethernet\ninterface-name=ens224\n\n[ethernet]\n\n[ipv4]\nmethod=auto\n\n[ipv6]\nmethod=auto\n' \
  "$(cat /proc/sys/kernel/random/uuid)" >"$connections/ens224.nmconnection"
chmod 600 "$connections"/*.nmconnection  # NetworkManager ignores a keyfile others can read
sed -i -e 's/^GRUB_TIMEOUT=.*/GRUB_TIMEOUT=1/' "$tree/etc/default/grub"
echo "GRUB_DISABLE_OS_PROBER=true" >>"$tree/etc/default/grub"
rm -rf "$tree"/var/cache/apt/archives/*.deb "$tree"/var/lib/apt/lists/*
tar -C "$tree" --numeric-owner -cf "$work/tree.tar" .

echo "[trixie-guest] assembling the disks with libguestfs" >&2
truncate -s 2G "$work/disk.raw"
truncate -s 64M "$work/data.raw"
guestfish --rw -a "$work/disk.raw" -a "$work/data.raw" >"$work/guestfish.log" 2>&1 <<GF || { tail -n 40 "$work/guestfish.log" >&2; exit 1; }
run
part-init /dev/sda gpt
part-add /dev/sda p 2048 4095
part-add /dev/sda p 4096 -34
part-set-gpt-type /dev/sda 1 21686148-6449-6E6F-744E-656564454649
mkfs ext4 /dev/sda2
set-uuid /dev/sda2 $root_uuid
part-init /dev/sdb gpt
part-add /dev/sdb p 2048 -34
mkfs ext4 /dev/sdb1
set-uuid /dev/sdb1 $data_uuid
mount /dev/sda2 /
tar-in $work/tree.tar / xattrs:true
mount /dev/sdb1 /srv/data
write /srv/data/README "the data disk of the zoo's Debian 13 guest\n"
sh "update-initramfs -u -k all"
sh "grub-install --target=i386-pc \$(grub-probe --target=disk /boot)"
sh "update-grub"
GF
# The guest must be as described, or the tests prove nothing.
grep -q "interface-name=ens192" <(virt-cat -a "$work/disk.raw" /etc/NetworkManager/system-connections/ens192.nmconnection) \
  || { echo "[trixie-guest] no keyfile for ens192" >&2; exit 1; }
virt-ls -a "$work/disk.raw" /boot | grep -q '^vmlinuz-6\.' || { echo "[trixie-guest] no 6.x kernel in /boot" >&2; exit 1; }
data=${image%.raw}-data.img
mv "$work/data.raw" "$data"
find "$OUT" -maxdepth 1 -name 'trixie-guest-*-data.img' ! -name "$(basename "$data")" -delete
guest_done trixie-guest
