"""Running a module's main() in-process with the arguments Ansible would pass, and reading its result."""

import json

import pytest
from ansible.module_utils.testing import patch_module_args


@pytest.fixture
def run_module(capsys):
    """``run_module(module, args)`` -> the module's result (a failure is a result with ``failed``)."""

    def run(module, args):
        with patch_module_args(args), pytest.raises(SystemExit):
            module.main()
        return json.loads(capsys.readouterr().out)

    return run
