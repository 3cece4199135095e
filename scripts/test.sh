#!/usr/bin/env bash
# The README's test command: set up this machine, start the labs, run every check.
#
#   bash scripts/test.sh            # everything (what CI runs)
#   bash scripts/test.sh unit lint  # only the named stages (labs are started when a stage needs them)
#
# Stages, in order: lint (ruff, ansible-lint), sanity (ansible-test), unit,
# functional (engine and adapters against real NBD servers and the labs),
# integration (ansible-test targets against the labs), molecule (the roles' scenarios
# under extensions/molecule, default driver, against the labs).
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

ALL_STAGES=(lint sanity unit functional integration molecule)
STAGES=("$@"); ((${#STAGES[@]})) || STAGES=("${ALL_STAGES[@]}")
wants() { local s; for s in "${STAGES[@]}"; do [[ $s == "$1" ]] && return 0; done; return 1; }

say "setting up the host"
bash scripts/setup-host.sh || { say "host set-up failed"; exit 1; }
VENV=${XMS_VENV:-$ROOT/.venv}
export PATH=$VENV/bin:$PATH

# --- labs, in the background -------------------------------------------------
declare -A LAB_PID=()
if wants functional || wants integration || wants molecule; then
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
  # ansible-lint puts ~/.ansible/collections first: an installed build of this collection there (an
  # older one) would hide the working tree's modules and roles. A home of its own leaves only ours.
  local home; home=$(mktemp -d)
  ruff check . && ruff format --check . \
    && ANSIBLE_HOME=$home ansible-lint --profile production --offline -q
  local rc=$?
  rm -rf "$home"
  return "$rc"
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
  local dest; dest=$(collection_copy) || return 1
  # Where the labs are, for the targets; it holds the lab's vCenter password, so 0600 and only in the copy.
  (umask 077 && python - "$dest" >"$dest/tests/integration/integration_config.yml" <<'PY'
import json, os, sys
dest = sys.argv[1]
lab_dir = os.environ["XMS_LAB_DIR"]
with open(os.path.join(lab_dir, "vsphere", "lab.json")) as handle:
    lab = json.load(handle)
state = os.path.join(dest, "tests", "output", "integration-state")
print(json.dumps({
    "lab_vm": "lab-vm-1",
    "xms_python": sys.executable,
    "xms_collection_root": dest,
    "xms_lab_dir": lab_dir,
    "xms_vcenter": {k: lab[k] for k in ("hostname", "port", "username", "password")} | {"validate_certs": False},
    # The lab's VDDK (lab/vsphere/vddk), read by the collection's reader as a conversion host reads VMware's.
    "xms_data_path": {"state_dir": state, "vddk_libdir": os.path.join(lab_dir, "vsphere", "vddk")},
    "xms_environment": {"PATH": os.environ["PATH"],
                        "OS_CLIENT_CONFIG_FILE": os.path.join(lab_dir, "openstack", "clouds.yaml")},
}))
PY
  ) || return 1
  # One ansible-test run per target, so the closing line counts targets, not tasks.
  local target rc=0
  for target in $(cd "$dest/tests/integration/targets" && ls); do
    grep -qx hidden "$dest/tests/integration/targets/$target/aliases" && continue
    run_case integration "$target" integration_target "$dest" "$target" || rc=1
  done
  write_cases integration
  return "$rc"
}
integration_target() { (cd "$1" && ansible-test integration --local --python 3.11 --color no "$2"); }

stage_molecule() {
  ANSIBLE_COLLECTIONS_PATH=$(collection_link) || return 1
  export ANSIBLE_COLLECTIONS_PATH
  local scenario rc=0
  for scenario in $(cd extensions/molecule && ls); do
    run_case molecule "$scenario" molecule test -s "$scenario" || rc=1
  done
  write_cases molecule
  return "$rc"
}

# Runners without a junit report of their own: one test case per named run.
CASES=()
run_case() { # suite name command...
  local suite=$1 name=$2; shift 2
  if "$@"; then CASES+=("<testcase classname=\"$suite\" name=\"$name\"/>"); return 0; fi
  CASES+=("<testcase classname=\"$suite\" name=\"$name\"><failure message=\"failed\"/></testcase>")
  return 1
}
write_cases() { # suite: the cases collected so far as $OUT/junit-<suite>.xml, counted in the closing line
  local junit=$OUT/junit-$1.xml failures
  failures=$(printf '%s\n' "${CASES[@]}" | grep -c '<failure')
  printf '<testsuite name="%s" tests="%s" failures="%s">%s</testsuite>\n' "$1" "${#CASES[@]}" "$failures" \
    "${CASES[*]}" >"$junit"
  JUNIT+=("$junit")
  CASES=()
}

wants lint && run_stage lint stage_lint
wants sanity && run_stage sanity stage_sanity
wants unit && run_stage unit stage_pytest unit tests/unit
if wants functional || wants integration || wants molecule; then
  say "waiting for the labs"
  wait_labs || FAILED+=("labs")
fi
wants functional && run_stage functional stage_pytest functional tests/functional
wants integration && run_stage integration stage_integration
wants molecule && run_stage molecule stage_molecule

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
