#!/usr/bin/env bash
# Stop the vSphere lab (vcsim and the storage daemons).
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
LAB=${XMS_LAB_DIR:-/var/lib/xms-lab}/vsphere
PY=${XMS_VENV:-$HERE/../../.venv}/bin/python
[ -f "$LAB/lab.json" ] && "$PY" "$HERE/cbt.py" stop
# shellcheck source=lab/pidfile.sh
. "$HERE/../pidfile.sh"
pid_runs "$LAB/vcsim.pid" "$LAB/vcsim-" && kill "$(cat "$LAB/vcsim.pid")"  # ours only (lab/pidfile.sh)
rm -f "$LAB/vcsim.pid"
exit 0
