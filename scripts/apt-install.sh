#!/usr/bin/env bash
# Install the Debian packages bindep.txt lists for a conversion host (its lines without a
# profile) plus those of the named profiles; only the missing ones, one installer at a time.
# bindep.txt is the one list: nothing in this repository installs a package it does not name.
# The labs start in parallel and each installs its own profile; apt's own locks make a
# second `apt-get update` fail at once, so every installer of this repository queues on one
# flock instead. Quiet unless something fails (log: $APT_LOG).
#
#   bash scripts/apt-install.sh [PROFILE...]          # install
#   bash scripts/apt-install.sh --list [PROFILE...]   # print the selection, one a line
#
# The reader understands the part of bindep's syntax bindep.txt uses: `name [selectors]`, where
# `platform:X` selectors must include dpkg and other selectors are profiles (a line without one
# is in every profile). tests/unit/test_bindep.py checks it agrees with bindep itself.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
list_only=0
if [[ ${1:-} == --list ]]; then list_only=1; shift; fi

selection() { # profiles...
  awk -v want=" $* " '
    { sub(/#.*/, "") }
    NF == 0 { next }
    {
      name = $1; sel = $0; platform_ok = 1; profile_ok = 1; has_platform = 0; has_profile = 0
      if (match(sel, /\[[^]]*\]/)) {
        n = split(substr(sel, RSTART + 1, RLENGTH - 2), s, " ")
        platform_ok = 0; profile_ok = 0
        for (i = 1; i <= n; i++) {
          if (s[i] ~ /^platform:/) { has_platform = 1; if (s[i] == "platform:dpkg") platform_ok = 1 }
          else { has_profile = 1; if (index(want, " " s[i] " ")) profile_ok = 1 }
        }
        if (!has_platform) platform_ok = 1
        if (!has_profile) profile_ok = 1
      }
      if (platform_ok && profile_ok && !(name in seen)) { seen[name] = 1; print name }
    }' "$ROOT/bindep.txt"
}

mapfile -t wanted < <(selection "$@")
if ((list_only)); then printf '%s\n' "${wanted[@]}"; exit 0; fi
missing=()
for p in "${wanted[@]}"; do
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
