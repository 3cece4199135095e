"""One unit convention for what the modules return: durations end in ``_seconds``, rates in ``_bytes_per_second``.

The record's figures (``MigrationState.metrics``) are named so where they are made. Dicts made from the engine's
dataclasses (a projection, a validation, a conversion) carry their fields' short names (``downtime_s``); they are
renamed here, where a result leaves the module (module_base.run), so no module can forget one, however deep it
sits. Each renamed value is also returned under its old name through the 0.1 releases, and only there: the old
names go in 0.2.0 (changelogs/fragments, deprecated_features). Nothing of the collection reads them.
"""

from __future__ import annotations

from typing import Any, Dict

# old name -> name by the convention
RENAMED: Dict[str, str] = {
    "duration_s": "duration_seconds",
    "copy_s": "copy_seconds",
    "downtime_s": "downtime_seconds",
    "projected_downtime_s": "projected_downtime_seconds",
    "final_sync_s": "final_sync_seconds",
    "conversion_s": "conversion_seconds",
    "instance_s": "instance_seconds",
    "sync_fixed_s": "sync_fixed_seconds",
    "took_s": "took_seconds",
    "after_s": "after_seconds",
    "elapsed_s": "elapsed_seconds",
    "rate_bytes_per_s": "rate_bytes_per_second",
    "rate": "rate_bytes_per_second",  # a disk copy's (block_sync's disks[].stats)
    "change_rate": "change_rate_bytes_per_second",
    "copy_rate": "copy_rate_bytes_per_second",
}
OLD_NAMES = {new: old for old, new in RENAMED.items()}


def with_unit_names(value: Any) -> Any:
    """``value`` with every key of RENAMED under its new name, and under its old one beside it (until 0.2.0)."""
    if isinstance(value, dict):
        renamed = {}
        for key, item in value.items():
            item = with_unit_names(item)
            new = RENAMED.get(key, key)
            renamed[new] = item
            old = OLD_NAMES.get(new)
            if old:
                renamed[old] = item
        return renamed
    if isinstance(value, (list, tuple)):
        return [with_unit_names(item) for item in value]
    return value
