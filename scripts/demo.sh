#!/usr/bin/env bash
# The README's demo command: a real warm migration on the embedded labs.
# Sets up this machine (apt packages, the venv), brings up both labs in parallel
# (vSphere: vcsim + real QEMU disks, and the lab guest; OpenStack: Keystone, Cinder,
# Nova, Neutron, Placement), then runs lab/demo/warm_migration.py: a wave of three
# VMs is seeded while writers change their disks, synced incrementally twice, cut
# over (the Debian guest converted by virt-v2v and boot-checked), the metrics table
# printed and every volume compared with its source byte for byte.
# First run on a fresh machine: ~15-20 min (packages, labs); afterwards ~5 min.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1
export XMS_LAB_DIR=${XMS_LAB_DIR:-/var/lib/xms-lab}
OUT=$ROOT/tests/output
mkdir -p "$OUT" "$XMS_LAB_DIR" "$OUT/collection/ansible_collections/xms"
ln -sfn "$ROOT" "$OUT/collection/ansible_collections/xms/warm_migration"
bash scripts/setup-host.sh
pids=()
for lab in vsphere openstack; do
  echo "[demo] starting the $lab lab (log: tests/output/lab-$lab.log)"
  bash "lab/$lab/up.sh" >"$OUT/lab-$lab.log" 2>&1 &
  pids+=($!)
done
for i in "${!pids[@]}"; do
  wait "${pids[$i]}" || { echo "[demo] a lab failed to start; see tests/output/lab-*.log" >&2; exit 1; }
done
exec .venv/bin/python lab/demo/warm_migration.py "$@"
