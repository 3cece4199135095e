#!/usr/bin/env bash
# The README's demo command. Sets up this machine (apt packages, the venv), then runs the
# engine demo: a disk that keeps changing under a writer is seeded, synced incrementally
# from real QEMU dirty bitmaps, synced a last time after the writer stops, and compared
# byte for byte. (The full warm migration on the vSphere and OpenStack labs replaces it
# when the migration lifecycle lands.)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1
bash scripts/setup-host.sh
mkdir -p tests/output/collection/ansible_collections/xms
ln -sfn "$ROOT" tests/output/collection/ansible_collections/xms/warm_migration
exec .venv/bin/python lab/demo/engine_demo.py
