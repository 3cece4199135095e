#!/usr/bin/env bash
# Make this Debian 12 machine able to run the collection, its tests and its demo:
# the system packages of a conversion host and of the test command (bindep.txt, profile
# `test`) and a venv on the system Python (which sees Debian's python3-libnbd) with the
# pinned Python packages. Idempotent; cheap when nothing changed. Labs install their own
# profiles of bindep.txt.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${XMS_VENV:-$ROOT/.venv}
export DEBIAN_FRONTEND=noninteractive
# The Ansible community package whose vmware.vmware (2.6.0) the venv gets, and its wheel's digest.
ANSIBLE_BUNDLE=12.3.0
ANSIBLE_BUNDLE_SHA256=cd156f82fa87f7a899212b0efa9f7ca3a24d609212de9f78428a572eb01e5414

APT_LOG=${APT_LOG:-/tmp/xms-apt.log} bash "$ROOT/scripts/apt-install.sh" test

# The venv sees exactly one system package: libnbd's binding (Debian's python3-libnbd).
# Not all of system site-packages: once Debian's OpenStack packages are installed (the lab
# does that) their old eventlet/osprofiler would shadow what openstacksdk needs.
stamp=$VENV/.requirements.sha256
want=$(cat "$ROOT/requirements.txt" "$ROOT/requirements-dev.txt" "$0" | sha256sum | cut -d' ' -f1)
if [[ ! -x $VENV/bin/python || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
  echo "setup-host: preparing venv $VENV"
  rm -rf "$VENV"
  /usr/bin/python3 -m venv "$VENV"
  shim=$VENV/system-nbd
  mkdir -p "$shim"
  for f in /usr/lib/python3/dist-packages/nbd.py /usr/lib/python3/dist-packages/libnbdmod.cpython-*.so; do
    ln -sf "$f" "$shim/"
  done
  site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "$shim" >"$site/xms-system-nbd.pth"
  pip_q() { "$VENV/bin/pip" "$@" 2> >(grep -v '^WARNING: Location' >&2); }  # quiet about this machine's absent local indexes
  pip_q install -q --upgrade pip
  pip_q install -q -r "$ROOT/requirements-dev.txt"
  # vmware.vmware, whose vms inventory plugin the dynamic inventory recipe uses (docs/inventory.md): Galaxy is
  # not reachable from every machine this runs on, PyPI is, and the Ansible community package bundles it.
  # Only that collection is taken, from the pinned wheel, into a path the tests name.
  wheels=$(mktemp -d)
  pip_q download -q --no-deps --only-binary=:all: -d "$wheels" "ansible==$ANSIBLE_BUNDLE"
  echo "$ANSIBLE_BUNDLE_SHA256  $wheels/ansible-$ANSIBLE_BUNDLE-py3-none-any.whl" | sha256sum -c --quiet
  "$VENV/bin/python" - "$wheels/ansible-$ANSIBLE_BUNDLE-py3-none-any.whl" "$VENV/share/ansible/collections" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel:
    wheel.extractall(sys.argv[2], [n for n in wheel.namelist() if n.startswith("ansible_collections/vmware/vmware/")])
PY
  rm -rf "$wheels"
  echo "$want" > "$stamp"
fi
"$VENV/bin/python" -c 'import nbd, pyVmomi, openstack, ansible' \
  || { echo "setup-host: the venv cannot import its packages" >&2; exit 1; }
