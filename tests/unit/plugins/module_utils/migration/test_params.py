"""The data path's numbers are checked before anything runs, naming the parameter."""

import pytest

from ansible_collections.xms.warm_migration.plugins.module_utils.argument_spec import data_path_argument_spec
from ansible_collections.xms.warm_migration.plugins.module_utils.migration import params as mparams
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.errors import PreflightError


def defaults(**override):
    return {**{name: spec.get("default") for name, spec in data_path_argument_spec().items()}, **override}


def test_the_defaults_copy_four_disks_at_once_without_a_cap():
    settings = mparams.sync_settings(defaults())
    assert settings.parallel_disks == 4 and settings.bandwidth_limit is None


@pytest.mark.parametrize(
    "override, parameter",
    [({"parallel_disks": 0}, "parallel_disks"), ({"bandwidth_limit": 0}, "bandwidth_limit"),
     ({"bandwidth_limit": -5}, "bandwidth_limit")],
)  # fmt: skip
def test_a_number_out_of_range_is_refused_naming_it(override, parameter):
    with pytest.raises(PreflightError) as err:
        mparams.sync_settings(defaults(**override))
    assert err.value.parameter == parameter and err.value.hint
