#!/usr/bin/env bash
# The README's test command: set up this machine, start the labs, run every check.
#
#   bash scripts/test.sh            # everything (what CI runs)
#   bash scripts/test.sh unit lint  # only the named stages (labs are started when a stage needs them)
#
# Stages, in order: lint (ruff, ansible-lint), sanity (ansible-test), unit,
# functional (engine and adapters against real NBD servers and the labs),
# integration (ansible-test targets against the labs).
# Every lab under lab/*/up.sh starts in the background at the beginning, so the
# slow ones (OpenStack takes minutes) come up while the fast checks run. A lab
# that fails to start fails the run: nothing is skipped.
# shellcheck disable=SC2317  # the stage_* functions are called through run_stage
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1
export XMS_LAB_DIR=${XMS_LAB_DIR:-/var/lib/xms-lab}
OUT=$ROOT/tests/output
mkdir -p "$OUT" "$XMS_LAB_DIR"
T0=$(date +%s)
say() { printf '[test %4ss] %s\n' "$(($(date +%s) - T0))" "$*"; }

ALL_STAGES=(lint sanity unit functional integration)
STAGES=("$@"); ((${#STAGES[@]})) || STAGES=("${ALL_STAGES[@]}")
wants() { local s; for s in "${STAGES[@]}"; do [[ $s == "$1" ]] && return 0; done; return 1; }

say "setting up the host"
bash scripts/setup-host.sh || { say "host set-up failed"; exit 1; }
VENV=${XMS_VENV:-$ROOT/.venv}
export PATH=$VENV/bin:$PATH

# --- labs, in the background -------------------------------------------------
declare -A LAB_PID=()
if wants functional || wants integration; then
  for up in lab/*/up.sh; do
    [[ -e $up ]] || continue
    name=$(basename "$(dirname "$up")")
    say "starting lab $name (log: tests/output/lab-$name.log)"
    bash "$up" >"$OUT/lab-$name.log" 2>&1 &
    LAB_PID[$name]=$!
  done
fi
wait_labs() {
  local name rc=0
  for name in "${!LAB_PID[@]}"; do
    if wait "${LAB_PID[$name]}"; then say "lab $name is up"
    else say "lab $name FAILED to start; last lines of its log:"; tail -n 30 "$OUT/lab-$name.log"; rc=1; fi
  done
  LAB_PID=()
  return $rc
}

FAILED=()
JUNIT=()
run_stage() { # name command...
  local name=$1; shift
  say "stage $name"
  if "$@"; then say "stage $name passed"; else say "stage $name FAILED"; FAILED+=("$name"); fi
}

# A copy of the tracked files at .../ansible_collections/xms/warm_migration, as ansible-test wants.
collection_copy() {
  local dest=$OUT/ansible-test/ansible_collections/xms/warm_migration
  rm -rf "$OUT/ansible-test" && mkdir -p "$dest"
  { git ls-files --cached --others --exclude-standard; } | sort -u \
    | while read -r f; do [[ -e $f ]] && printf '%s\n' "$f"; done \
    | rsync -a --files-from=- ./ "$dest/"
  (cd "$dest" && git init -q && git add -A >/dev/null)
  mkdir -p ~/.ansible/test/cache
  # ansible-test bootstraps pip in its venvs from a download this network cannot reach; the stand-in
  # is cached under the name of the pip version this ansible-test asks for.
  local pipver
  pipver=$(python -c 'import re, ansible_test._internal.python_requirements as m, inspect
print(re.search(r"pip=.([0-9.]+).", inspect.getsource(m.get_venv_packages)).group(1).replace(".", "_"))') || return 1
  cp scripts/ansible-test-get-pip-offline.py ~/.ansible/test/cache/"get_pip_${pipver}.py"
  echo "$dest"
}

# A link at .../ansible_collections/xms/warm_migration -> this checkout, so Ansible finds the collection by name.
collection_link() {
  local parent=$OUT/collection
  mkdir -p "$parent/ansible_collections/xms"
  ln -sfn "$ROOT" "$parent/ansible_collections/xms/warm_migration"
  echo "$parent"
}

stage_lint() {
  ANSIBLE_COLLECTIONS_PATH=$(collection_link) || return 1
  export ANSIBLE_COLLECTIONS_PATH
  ruff check . && ruff format --check . \
    && ansible-lint --profile production --offline -q
}
stage_sanity() {
  local dest; dest=$(collection_copy) || return 1
  (cd "$dest" && ansible-test sanity --local --python 3.11 --requirements --color no)
}
stage_pytest() { # junit-name paths...
  local name=$1; shift
  JUNIT+=("$OUT/junit-$name.xml")
  python -m pytest -q -ra --junitxml="$OUT/junit-$name.xml" "$@"
}
stage_integration() {
  [[ -n $(ls tests/integration/targets 2>/dev/null) ]] || { say "no integration targets yet"; return 0; }
  local dest; dest=$(collection_copy) || return 1
  (cd "$dest" && ansible-test integration --local --python 3.11 --color no)
}

wants lint && run_stage lint stage_lint
wants sanity && run_stage sanity stage_sanity
wants unit && run_stage unit stage_pytest unit tests/unit
if wants functional || wants integration; then
  say "waiting for the labs"
  wait_labs || FAILED+=("labs")
fi
wants functional && run_stage functional stage_pytest functional tests/functional
wants integration && run_stage integration stage_integration

# One closing line for every test that ran, whatever runner ran it.
if ! python - "${JUNIT[@]}" <<'PY'
import sys, xml.etree.ElementTree as ET
passed = failed = skipped = 0
for path in sys.argv[1:]:
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        failed += 1
        continue
    for suite in ([root] if root.tag == "testsuite" else root.iter("testsuite")):
        n, f, e, s = (int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped"))
        passed += n - f - e - s; failed += f + e; skipped += s
print(f"tests: {passed} passed, {failed} failed, {skipped} skipped")
if skipped:
    print("a skipped test is a part of the suite that did not run: that fails the run", file=sys.stderr)
sys.exit(1 if failed or skipped else 0)
PY
then
  FAILED+=("skipped-or-failed-tests")
fi
say "done in $(($(date +%s) - T0))s"
if ((${#FAILED[@]})); then say "FAILED: ${FAILED[*]}"; exit 1; fi
exit 0
