#!/usr/bin/env bash
# The vSphere lab: vcsim (built from Debian's govmomi library) extended with the CBT calls
# it lacks, answered by cbt.py from real QEMU state (qcow2 disks, internal snapshots, dirty
# bitmaps). Idempotent; listens on 127.0.0.1:8989. Writes ${XMS_LAB_DIR}/vsphere/lab.json.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
export XMS_LAB_DIR=${XMS_LAB_DIR:-/var/lib/xms-lab}
export DEBIAN_FRONTEND=noninteractive
LAB=$XMS_LAB_DIR/vsphere
PY=${XMS_VENV:-$ROOT/.venv}/bin/python
mkdir -p "$LAB"
chmod 700 "$LAB"
say() { echo "[vsphere] $*"; }

APT_LOG=$LAB/apt.log bash "$ROOT/scripts/apt-install.sh" lab-vsphere

# lab-vm-linux's boot disk: the lab guest; lab-vm-uefi's: the zoo's UEFI guest; lab-vm-trixie's two disks:
# the zoo's Debian 13 guest; lab-vm-windows's: the zoo's phony Windows guest. Built once and cached.
XMS_LAB_GUEST_IMAGE=$(bash "$ROOT/lab/guest/build.sh")
XMS_LAB_UEFI_IMAGE=$(bash "$ROOT/lab/guest/build-uefi.sh")
XMS_LAB_TRIXIE_IMAGE=$(bash "$ROOT/lab/guest/build-trixie.sh")
XMS_LAB_TRIXIE_DATA_IMAGE=${XMS_LAB_TRIXIE_IMAGE%.raw}-data.img
XMS_LAB_WINDOWS_IMAGE=$(bash "$ROOT/lab/guest/build-windows.sh")
export XMS_LAB_GUEST_IMAGE XMS_LAB_UEFI_IMAGE XMS_LAB_TRIXIE_IMAGE XMS_LAB_TRIXIE_DATA_IMAGE XMS_LAB_WINDOWS_IMAGE

# The simulator binary, rebuilt when its source changes.
tag=$(cat "$HERE"/vcsim/*.go | sha256sum | cut -c1-16)
bin=$LAB/vcsim-$tag
if [ ! -x "$bin" ]; then
  say "building vcsim"
  build=$(mktemp -d)
  cp "$HERE"/vcsim/*.go "$build/"
  (cd "$build" && GOPATH=/usr/share/gocode GO111MODULE=off GOCACHE=$LAB/gocache GOFLAGS=-mod=mod go build -o "$bin" .)
  rm -rf "$build"
  find "$LAB" -maxdepth 1 -name 'vcsim-*' ! -name "vcsim-$tag" -delete
fi

# The lab's VDDK (vddk/vixDiskLib.c), rebuilt when its source changes: <vddk_libdir>/lib64/libvixDiskLib.so.N
# as VMware lays VDDK out, so nbdkit's vddk plugin and the collection's reader load it as they load VDDK.
VDDK_VERSION=8.0.3
lib=$LAB/vddk/lib64/libvixDiskLib.so.$VDDK_VERSION
vddk_tag=$(cat "$HERE/vddk/vixDiskLib.c" "$HERE/vddk/vixDiskLib.h" | sha256sum | cut -c1-16)
if [ "$(cat "$LAB/vddk/tag" 2>/dev/null)" != "$vddk_tag" ] || [ ! -s "$lib" ]; then
  say "building the lab's VDDK"
  mkdir -p "$LAB/vddk/lib64"
  gcc -std=gnu11 -Wall -Wextra -Werror -O2 -fPIC -shared -fvisibility=hidden \
    -Wl,-soname,libvixDiskLib.so.${VDDK_VERSION%%.*} -o "$lib.tmp" "$HERE/vddk/vixDiskLib.c" -lnbd -lpthread
  mv "$lib.tmp" "$lib"
  ln -sfn "libvixDiskLib.so.$VDDK_VERSION" "$LAB/vddk/lib64/libvixDiskLib.so.${VDDK_VERSION%%.*}"
  ln -sfn "libvixDiskLib.so.${VDDK_VERSION%%.*}" "$LAB/vddk/lib64/libvixDiskLib.so"
  echo "$vddk_tag" >"$LAB/vddk/tag"
fi

# A running lab is kept only if it runs this simulator and this VM layout; otherwise it starts over.
shape=$(cat "$bin" "$HERE/populate.py" | sha256sum | cut -c1-16)
# shellcheck source=lab/pidfile.sh
. "$HERE/../pidfile.sh"
if pid_runs "$LAB/vcsim.pid" "$bin" && [ -s "$LAB/lab.json" ] \
  && [ "$(cat "$LAB/shape" 2>/dev/null)" = "$shape" ]; then
  say "vcsim already runs"
else
  bash "$HERE/down.sh"
  # vcsim forgets everything on restart
  ! mountpoint -q "$LAB/nfs-mnt/nfs-ds0" || umount "$LAB/nfs-mnt/nfs-ds0"
  rm -rf "$LAB/qsd" "$LAB/disks" "$LAB/nfs-ds0" "$LAB/state.json" "$LAB/lab.json" "$LAB/vcsim.url" "$LAB/vddk/snapshots" "$LAB/vddk/run"
  mkdir -p "$LAB/disks"
  "$PY" "$HERE/cbt.py" stop 2>/dev/null || true
  [ -s "$LAB/password" ] || (umask 077 && head -c 12 /dev/urandom | base64 | tr -d '/+=' >"$LAB/password")
  helper=$(printf '["%s", "%s"]' "$PY" "$HERE/cbt.py")
  XMS_LAB_VCENTER_PASSWORD=$(cat "$LAB/password") setsid "$bin" -listen 127.0.0.1:8989 -vms 8 -helper "$helper" -datastore-dir "$LAB/disks" -ready "$LAB/vcsim.url" >"$LAB/vcsim.log" 2>&1 &
  echo $! >"$LAB/vcsim.pid"
  for _ in $(seq 100); do [ -s "$LAB/vcsim.url" ] && break; sleep 0.1; done
  [ -s "$LAB/vcsim.url" ] || { say "vcsim did not start"; tail "$LAB/vcsim.log"; exit 1; }
  "$PY" "$HERE/populate.py"
  "$PY" "$HERE/cbt.py" start
  echo "$shape" >"$LAB/shape"
fi
# The conversion host's read-only mount of the lab's NFS datastore (nfs_mounts in the tests). This kernel has no
# NFS client: a read-only bind mount of the datastore's directory stands for it (lab/vsphere/README.md).
mkdir -p "$LAB/nfs-mnt/nfs-ds0"
if ! mountpoint -q "$LAB/nfs-mnt/nfs-ds0"; then
  mount --bind "$LAB/nfs-ds0" "$LAB/nfs-mnt/nfs-ds0"
  mount -o remount,bind,ro "$LAB/nfs-mnt/nfs-ds0"
fi
say "up on 127.0.0.1:8989; connection and VMs in $LAB/lab.json"
