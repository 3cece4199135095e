"""The cutover's validation: real probes from this host (iputils' ping, TCP connects to a listener of the
test's own) against addresses that answer and one that cannot (240.0.0.1 is reserved: no route to it), and
console logs as Nova returns them. The clock is the test's: it moves only when validation sleeps."""

import socket

import pytest

from ansible_collections.xms.warm_migration.plugins.module_utils.migration import validation
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.validation import (
    ValidationSettings,
    validate,
)

NOWHERE = "240.0.0.1"
BOOTED = "[    0.000000] Linux version 6.1.0-27-cloud-amd64 ...\n[  OK  ] Reached target multi-user.target\n"


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


@pytest.fixture
def listener():
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server.getsockname()[1]


def run(addresses, settings, console=lambda: ""):
    clock = Clock()
    return validate(addresses, console, settings, clock=clock, sleep=clock.sleep)


def test_an_instance_that_answers_passes_at_once(listener):
    result = run(["127.0.0.1"], ValidationSettings(tcp_ports=(listener,)), console=lambda: BOOTED)
    assert result.passed and result.took_s == 0
    found = [(e.check, e.target, e.ok) for e in result.evidence]
    assert found == [("ping", "127.0.0.1", True), ("tcp", f"127.0.0.1:{listener}", True),
                     ("console", "console log", True)]  # fmt: skip
    assert result.evidence[2].detail == "shows '[    0.000000] Linux version 6.1.0-27-cloud-amd64 ...'"


def test_an_instance_that_never_answers_fails_when_the_time_is_up():
    result = run([NOWHERE], ValidationSettings(timeout_s=30))
    assert not result.passed and result.took_s == 30
    assert result.summary() == f"ping {NOWHERE}" and result.evidence[0].detail == "no answer"
    assert result.evidence[1].detail == "silent (the guest writes no serial console)"


def test_a_closed_port_fails_although_the_guest_answers_ping(listener):
    closed = listener + 1 if listener < 65535 else listener - 1
    result = run(["127.0.0.1"], ValidationSettings(timeout_s=10, tcp_ports=(closed,)))
    assert not result.passed and result.summary() == f"tcp 127.0.0.1:{closed}"


def test_a_guest_that_comes_up_late_passes_when_it_answers(monkeypatch):
    answers = iter([False, False, True])
    monkeypatch.setattr(validation, "ping", lambda address, timeout_s=2: next(answers))  # mock: a guest still booting
    result = run(["10.10.1.5"], ValidationSettings(timeout_s=60))
    assert result.passed and result.evidence[0].after_s == 2 * validation.POLL_S


def test_without_an_address_the_console_decides():
    assert run([], ValidationSettings(timeout_s=10), console=lambda: BOOTED).passed
    silent = run([], ValidationSettings(timeout_s=10))
    assert not silent.passed and silent.summary() == "no evidence"


def test_a_quiet_kernels_warnings_show_it_past_the_boot_loader():
    quiet = "\x1b[2J SeaBIOS\r\n[    1.093342] ACPI: _OSC evaluation for CPUs failed, trying _PDC\r\n"
    assert run([], ValidationSettings(timeout_s=10), console=lambda: quiet).passed
    assert not run([], ValidationSettings(timeout_s=10), console=lambda: "Booting from Hard Disk...\r\n").passed
