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
  echo "$want" > "$stamp"
fi
"$VENV/bin/python" -c 'import nbd, pyVmomi, openstack, ansible' \
  || { echo "setup-host: the venv cannot import its packages" >&2; exit 1; }
