#!/usr/bin/env bash
# Stop the vSphere lab (vcsim and the storage daemons).
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
LAB=${XMS_LAB_DIR:-/var/lib/xms-lab}/vsphere
PY=${XMS_VENV:-$HERE/../../.venv}/bin/python
[ -f "$LAB/lab.json" ] && "$PY" "$HERE/cbt.py" stop
[ -f "$LAB/vcsim.pid" ] && kill "$(cat "$LAB/vcsim.pid")" 2>/dev/null
rm -f "$LAB/vcsim.pid"
exit 0
