"""Calls side by side: all at once, results in order, every call ended before a failure is raised."""

import threading

import pytest

from ansible_collections.xms.warm_migration.plugins.module_utils.common.side_by_side import AT_ONCE, side_by_side


def test_the_calls_run_at_once_and_answer_in_order():
    items = list(range(4))
    gate = threading.Barrier(len(items), timeout=10)  # passes only if all four wait at the same time

    def call(item):
        gate.wait()
        return item * 10

    assert side_by_side(call, items) == [0, 10, 20, 30]


def test_the_first_failure_in_order_is_raised_after_every_call_ended():
    ended = []
    release = threading.Event()

    def call(item):
        if item == 2:
            raise ValueError("second")
        if item == 1:
            raise KeyError("first")
        release.wait(10)  # still running when the failures happen
        ended.append(item)
        return item

    timer = threading.Timer(0.2, release.set)
    timer.start()
    with pytest.raises(KeyError, match="first"):
        side_by_side(call, [0, 1, 2, 3])
    assert sorted(ended) == [0, 3]


def test_no_more_than_at_once_run_together():
    running, peak, lock = [0], [0], threading.Lock()

    def call(_item):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        threading.Event().wait(0.01)
        with lock:
            running[0] -= 1

    side_by_side(call, list(range(AT_ONCE * 3)))
    assert 1 < peak[0] <= AT_ONCE


def test_one_item_or_none_runs_on_the_calling_thread():
    assert side_by_side(lambda _item: threading.current_thread() is threading.main_thread(), [1]) == [True]
    assert side_by_side(lambda item: item, []) == []
