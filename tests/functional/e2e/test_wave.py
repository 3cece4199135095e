"""End to end: the demo's wave of two VMs with two disks each, through the collection's playbooks.

Writers change the source disks during the seed and two incrementals; the
cutover shuts the VMs down first; the demo then compares every volume with
its source disk (SHA-256) and exits non-zero on any difference. (The lab guest
with conversion and boot check is covered by tests/functional/migration/test_cutover.py;
the README's demo adds it to the wave.)

The wave reports the demo writes (one while the wave is ready, one after its cutover) are then
opened in a real browser, headless Chromium from Debian's packages: the page loads with no
console message (the page's Content-Security-Policy turns any load into one, and a control page
shows the check sees them), its charts have their elements, and a screenshot of each is kept
under tests/output/report/. The metrics file is checked with promtool, as Prometheus reads it.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
LAB_DIR = os.environ.get("XMS_LAB_DIR", "/var/lib/xms-lab")
SHOTS = os.path.join(ROOT, "tests", "output", "report")
WAVE = ("lab-vm-1", "lab-vm-2")


@pytest.fixture(scope="module")
def demo():
    """The demo's wave, run once for the tests of this module: its output and its work directory."""
    script = os.path.join(ROOT, "lab", "demo", "warm_migration.py")
    run = subprocess.run([sys.executable, script, "--wave", ",".join(WAVE), "--incrementals", "2"],
                         capture_output=True, text=True, check=False)  # fmt: skip
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    return run.stdout, re.search(r"logs and state in (\S+)", run.stdout).group(1)


class Elements(HTMLParser):
    """The classes of the DOM's elements, by chart: what the browser made of the page."""

    def __init__(self):
        super().__init__()
        self.chart, self.found = None, {}

    def handle_starttag(self, tag, attrs):
        classes = (dict(attrs).get("class") or "").split()
        if tag == "svg" and "chart" in classes:
            self.chart = next(c for c in classes if c.startswith("chart-"))
            self.found.setdefault(self.chart, []).append(tag)
        elif self.chart and classes:
            self.found[self.chart].extend(classes)

    def handle_endtag(self, tag):
        if tag == "svg":
            self.chart = None


def chromium(page: str, *flags: str) -> subprocess.CompletedProcess:
    argv = [shutil.which("chromium") or "chromium", "--headless", "--no-sandbox", "--disable-gpu",
            "--enable-logging=stderr", "--v=0", *flags, f"file://{page}"]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def console_messages(run: subprocess.CompletedProcess) -> list:
    return [line for line in run.stderr.splitlines() if ":CONSOLE" in line]


def open_in_browser(page: str, shot: str) -> dict:
    """Load the page in Chromium: no console message, and the DOM's chart elements by chart."""
    dom = chromium(page, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert console_messages(dom) == [], f"{page} logged to the console"
    os.makedirs(SHOTS, exist_ok=True)
    snap = chromium(page, f"--screenshot={os.path.join(SHOTS, shot)}", "--window-size=1280,1024")
    assert snap.returncode == 0 and os.path.getsize(os.path.join(SHOTS, shot)) > 10_000, snap.stderr[-2000:]
    parsed = Elements()
    parsed.feed(dom.stdout)
    return parsed.found


def test_the_browser_check_sees_a_page_that_loads_something(tmp_path):
    """The control: a page that tries to load an image logs the refusal (so silence means no error)."""
    page = tmp_path / "control.html"
    page.write_text(
        "<!DOCTYPE html><html><head><meta http-equiv='Content-Security-Policy' content=\"default-src 'none'\">"
        "</head><body><img src='http://example.invalid/x.png'></body></html>"
    )
    assert console_messages(chromium(str(page), "--dump-dom")) != []


def test_a_wave_of_two_vms_migrates_warm_and_ends_byte_identical(demo):
    out, workdir = demo
    assert "every volume matches its source" in out
    assert len(re.findall(r"^lab-vm-[12]\s+\S+.*identical$", out, re.M)) == 4  # 2 VMs x 2 disks
    assert len(re.findall(r"^lab-vm-[12]\s+completed\s", out, re.M)) == 2
    incr = [int(line.split()[5]) for line in out.splitlines() if re.match(r"^lab-vm-[12]\s+completed\s", line)]
    assert all(b > 0 for b in incr)  # the writers' changes travelled as increments
    with open(os.path.join(LAB_DIR, "vsphere", "lab.json")) as handle:
        password = json.load(handle)["password"]
    for name in os.listdir(workdir):
        path = os.path.join(workdir, name)
        if name.endswith(".log"):
            with open(path) as handle:
                assert password not in handle.read(), f"the vCenter password leaked into {name}"
    assert oct(os.stat(os.path.join(workdir, "vcenter.password")).st_mode & 0o777) == "0o600"
    with open(os.path.join(workdir, "04-cutover.log")) as handle:
        cutover_log = handle.read()
    for vm in WAVE:  # the cutover playbook ends with one line per VM: downtime, instance, where the time went
        line = rf'"{vm}: down \d+ s, instance [0-9a-f-]{{36}} \(guest shutdown \d+ s, final delta'
        assert re.search(line, cutover_log), cutover_log[-3000:]


def test_the_wave_report_while_ready_shows_lag_and_syncs_in_a_browser(demo):
    found = open_in_browser(os.path.join(demo[1], "wave1-ready.html"), "wave1-ready.png")
    assert found["chart-lag"].count("bar") == len(WAVE)  # both VMs are ready: a lag bar each
    assert found["chart-sync"].count("svg") == len(WAVE)
    assert found["chart-sync"].count("bar") == 2 * len(WAVE) * 3  # bytes and duration of seed + 2 incrementals
    assert "chart-cutover" not in found


def test_the_wave_report_after_the_cutover_shows_the_timeline_in_a_browser(demo):
    found = open_in_browser(os.path.join(demo[1], "wave1-report.html"), "wave1-report.png")
    assert "chart-lag" not in found  # nothing is ready any more; the page says so
    assert found["chart-sync"].count("bar") == 2 * len(WAVE) * 4  # and the cutover's final delta
    steps = [c for c in found["chart-cutover"] if c.startswith("step-")]
    assert {"step-shutdown", "step-final_sync", "step-instance", "step-completed"} <= set(steps)
    with open(os.path.join(demo[1], "wave1-report.html")) as handle:
        html = handle.read()
    assert re.search(r"\d+\.\d (KiB|MiB|GiB)", html), "bytes in human units"


def test_the_wave_metrics_are_valid_for_prometheus(demo):
    path = os.path.join(demo[1], "wave1.prom")
    with open(path) as handle:
        text = handle.read()
    run = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, check=False)
    assert run.returncode == 0 and run.stdout + run.stderr == "", run.stdout + run.stderr
    for vm in WAVE:
        assert re.search(rf'^xms_warm_migration_phase{{vm="{vm}",migration_id="vm-[^"]+",wave="wave1",'
                         rf'phase="completed"}} 1$', text, re.M)  # fmt: skip
        assert re.search(rf'^xms_warm_migration_downtime_seconds{{vm="{vm}",[^}}]*}} \d+$', text, re.M)
        assert re.search(rf'^xms_warm_migration_syncs_total{{vm="{vm}",[^}}]*}} [4-9]$', text, re.M)
