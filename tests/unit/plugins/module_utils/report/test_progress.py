"""The progress lines the wait_progress action prints, from migration_info's view of a record."""

from ansible_collections.xms.warm_migration.plugins.module_utils.report.progress import progress_line


def test_a_running_copy_says_done_of_total_rate_and_eta():
    running = {"vm_name": "web01", "phase": "seeding", "busy": True, "rate_bytes_per_second": 100 << 20,
               "progress": {"done": 1 << 30, "total": 4 << 30}}  # fmt: skip
    assert progress_line(running) == "web01: seeding 1.0 GiB of 4.0 GiB (25%) at 100.0 MiB/s, ETA 31 s"


def test_before_the_copy_it_says_what_is_prepared_and_an_idle_record_says_nothing():
    assert "preparing" in progress_line({"vm_name": "web01", "phase": "syncing", "busy": True, "progress": None})
    assert progress_line({"vm_name": "web01", "phase": "ready", "busy": False}) == ""


def test_a_cutover_says_its_last_step_and_the_downtime_so_far():
    line = progress_line({"vm_name": "db01", "phase": "cutover", "cutover_step": "final_sync", "downtime_seconds": 42})
    assert line == "db01: cutover, steps done up to final_sync, guest down 42 s so far"
