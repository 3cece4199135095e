# shellcheck shell=bash
# What every guest build of the lab shares (sourced by build.sh and build-uefi.sh): one builder per
# image at a time, the cache by the hash of the build scripts, the packages, libguestfs's accelerator
# and a work directory removed on exit. After `guest_build NAME SCRIPT`: $image (where the image goes),
# $work, $tree and $mirror; a cached image is printed and the script exits.
guest_build() { # name build-script
  local name=$1 script=$2 here root tag
  here=$(cd "$(dirname "$script")" && pwd)
  root=$(cd "$here/../.." && pwd)
  export XMS_LAB_DIR=${XMS_LAB_DIR:-/var/lib/xms-lab}
  OUT=$XMS_LAB_DIR/guest
  mkdir -p "$OUT"
  exec 8>"$OUT/.build-$name.lock"
  flock 8  # one builder at a time; the second finds the first one's image
  tag=$(cat "$script" "$here/common.sh" | sha256sum | cut -c1-16)
  image=$OUT/$name-$tag.raw
  if [ -s "$image" ]; then echo "$image"; exit 0; fi
  APT_LOG=$OUT/apt.log bash "$root/scripts/apt-install.sh" lab-guest >&2
  export LIBGUESTFS_BACKEND=direct
  # Where KVM cannot run a Linux kernel (nested hypervisors: QEMU aborts, or the guest hangs silently),
  # libguestfs must use TCG. The collection's own probe decides, as it does for conversions.
  [ "$(python3 "$root/plugins/module_utils/conversion/accel.py")" = kvm ] || export LIBGUESTFS_BACKEND_SETTINGS=force_tcg
  work=$(mktemp -d "$OUT/build-$name.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  # shellcheck disable=SC2034 # for the sourcing script
  tree=$work/tree
  # shellcheck disable=SC2034 # for the sourcing script
  mirror=${XMS_DEBIAN_MIRROR:-http://deb.debian.org/debian}
}

guest_done() { # name: the assembled disk becomes the cached image; older builds of it go
  mv "$work/disk.raw" "$image"
  find "$OUT" -maxdepth 1 -name "$1-*.raw" ! -name "$(basename "$image")" -delete
  echo "$image"
}
