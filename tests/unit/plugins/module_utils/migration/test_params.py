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


def test_a_password_file_is_read_only_when_private_to_this_user(tmp_path):
    path = tmp_path / "vcenter.password"
    path.write_text("s3cret\nignored\n")
    path.chmod(0o600)
    assert mparams.read_secret_file(str(path), "password_file") == "s3cret"
    path.chmod(0o640)
    with pytest.raises(PreflightError) as err:
        mparams.read_secret_file(str(path), "password_file")
    assert err.value.parameter == "password_file" and "mode 640" in str(err.value) and "s3cret" not in str(err.value)
    path.chmod(0o600)
    path.write_text("\n")
    with pytest.raises(PreflightError, match="holds nothing"):
        mparams.read_secret_file(str(path), "password_file")
    with pytest.raises(PreflightError, match="cannot be read"):
        mparams.read_secret_file(str(tmp_path / "missing"), "password_file")
