"""The cutover's last lines: one per VM, the downtime and where it went, or why there is none."""

from ansible_collections.xms.warm_migration.plugins.filter.cutover_summary import cutover_summary


def test_a_line_per_vm_done_failed_or_not_reached():
    done = {"downtime_seconds": 312, "timings": {"shutdown": 21, "final_sync": 14, "converted": 240},
            "migration": {"instance_id": "5d1c", "validation": "passed in 48 s: ping 10.0.4.17"}}  # fmt: skip
    hostvars = {
        "web01": {"cutover_result": done},
        "db": {"warm_migration_vm_name": "db01", "cutover_result": {"failed": True, "msg": "Failed to cut over: x"}},
        "app": {},
    }
    assert cutover_summary(["web01", "db", "app"], hostvars) == [
        "web01: down 5 min 12 s, instance 5d1c (guest shutdown 21 s, final delta 14 s, conversion 4 min 00 s);"
        " validation passed in 48 s: ping 10.0.4.17",
        "db01: FAILED - Failed to cut over: x",
        "app: not cut over (the run stopped before its turn)",
    ]
