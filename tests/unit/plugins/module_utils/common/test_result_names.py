"""What a module returns: durations in ``_seconds``, rates in ``_bytes_per_second``, however deep, with the old
names beside them until 0.2.0."""

from ansible_collections.xms.warm_migration.plugins.module_utils.common.result_names import with_unit_names


def test_short_names_deep_in_a_result_get_the_convention_and_keep_the_old_name_beside():
    result = {
        "changed": True,
        "projection": {"downtime_s": 95.2, "change_rate": 1048576.0, "conversion_measured": False},
        "validation": {"passed": True, "took_s": 48.0, "evidence": [{"check": "ping", "after_s": 45.0}]},
    }
    named = with_unit_names(result)
    assert named["projection"]["downtime_seconds"] == named["projection"]["downtime_s"] == 95.2
    assert named["projection"]["change_rate_bytes_per_second"] == named["projection"]["change_rate"]
    assert named["validation"]["evidence"][0] == {"check": "ping", "after_seconds": 45.0, "after_s": 45.0}
    assert named["changed"] is True and named["projection"]["conversion_measured"] is False


def test_a_name_by_the_convention_gets_its_old_name_and_a_name_that_never_changed_gets_none():
    named = with_unit_names(
        {"migration": {"downtime_seconds": 312, "lag_seconds": 40, "history": [{"copy_seconds": 1}]}}
    )
    assert named["migration"] == {
        "downtime_seconds": 312,
        "downtime_s": 312,
        "lag_seconds": 40,
        "history": [{"copy_seconds": 1, "copy_s": 1}],
    }
