#!/usr/bin/env bash
# Install the named Debian packages that are missing, one installer at a time.
# The labs start in parallel and each installs its own packages; apt's own locks
# make a second `apt-get update` fail at once, so every installer of this
# repository queues on one flock instead. Quiet unless something fails (log: $APT_LOG).
#
#   bash scripts/apt-install.sh PACKAGE...
set -euo pipefail
missing=()
for p in "$@"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ $status == *"ok installed"* ]] || missing+=("$p")
done
((${#missing[@]})) || exit 0
export DEBIAN_FRONTEND=noninteractive
log=${APT_LOG:-/tmp/xms-apt.log}
echo "apt install ${missing[*]} (log: $log)"
exec 9>/var/lock/xms-apt.lock
flock 9
{
  apt-get -o DPkg::Lock::Timeout=900 update -qq
  apt-get install -y -q -o DPkg::Lock::Timeout=900 --no-install-recommends "${missing[@]}"
} >>"$log" 2>&1 || { echo "apt install failed; last lines of $log:" >&2; tail -n 20 "$log" >&2; exit 1; }
