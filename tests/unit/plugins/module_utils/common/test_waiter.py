"""Waiter behaviour on a driven clock: no real sleeping."""

import pytest

from ansible_collections.xms.warm_migration.plugins.module_utils.common.errors import WarmMigrationError
from ansible_collections.xms.warm_migration.plugins.module_utils.common.waiter import Backoff, WaitTimeout, wait_for


class FakeClock:
    """A clock that only moves when the waiter sleeps."""

    def __init__(self):
        self.now = 0.0
        self.sleeps = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def test_returns_first_truthy_value():
    clock = FakeClock()
    answers = iter([None, False, "ready"])
    assert wait_for(lambda: next(answers), timeout=60, what="x", clock=clock, sleep=clock.sleep) == "ready"
    assert len(clock.sleeps) == 2


def test_times_out_naming_what_was_awaited():
    clock = FakeClock()
    with pytest.raises(WaitTimeout) as err:
        wait_for(
            lambda: None,
            timeout=5,
            what="volume vol-1 to become available",
            hint="Check cinder-volume.",
            clock=clock,
            sleep=clock.sleep,
        )
    assert "volume vol-1 to become available" in str(err.value)
    assert "Check cinder-volume." in str(err.value)
    assert clock.now == pytest.approx(5)


def test_backoff_grows_and_is_capped():
    clock = FakeClock()
    with pytest.raises(WaitTimeout):
        wait_for(
            lambda: None,
            timeout=100,
            what="x",
            clock=clock,
            sleep=clock.sleep,
            backoff=Backoff(initial=1, factor=2, maximum=8, jitter=0),
        )
    assert clock.sleeps[:5] == [1, 2, 4, 8, 8]


def test_predicate_errors_abort_the_wait():
    def broken():
        raise WarmMigrationError("volume went to error")

    with pytest.raises(WarmMigrationError, match="went to error"):
        wait_for(broken, timeout=60, what="x")


def test_error_text_names_parameter_and_hint():
    err = WarmMigrationError("Failed to find VM 'web01'", parameter="vm_name", hint="Check the name")
    assert str(err) == "Failed to find VM 'web01' (parameter: vm_name). Check the name"
