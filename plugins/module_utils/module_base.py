"""The bridge between Ansible modules and the plain-Python engine.

Modules stay thin: they build an :class:`AnsibleModule` from the shared specs,
then hand a function to :func:`run`. Everything under ``module_utils`` raises
:class:`WarmMigrationError` subclasses instead of calling ``fail_json``; here
they become ``fail_json(msg="Failed to <action>: <cause>")``. An unexpected
exception is a bug: it is reported as one (type and message), never as a raw
traceback in the result, and never with parameter values that could hold a
secret.
"""

from __future__ import annotations

import traceback
from typing import Any, Callable, Dict

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.xms.warm_migration.plugins.module_utils.common.errors import WarmMigrationError
from ansible_collections.xms.warm_migration.plugins.module_utils.common.result_names import with_unit_names


def run(module: AnsibleModule, action: str, body: Callable[[], Dict[str, Any]]) -> None:
    """Run ``body`` and exit the module with its result, or fail with a clear message.

    ``action`` completes the sentence "Failed to ...", e.g. "sync migration of VM 'web01'".
    ``body`` returns the result dict (must contain ``changed``).
    """
    try:
        result = body()
    except WarmMigrationError as err:
        extra = {"parameter": err.parameter} if err.parameter else {}
        module.fail_json(msg=f"Failed to {action}: {err}", error_type=type(err).__name__, **extra)
    except Exception as err:  # anything else is a bug: say so, without leaking a traceback into msg
        module.fail_json(
            msg=f"Failed to {action}: internal error {type(err).__name__}: {err}. "
            "This is a bug in xms.warm_migration; please report it with the task output at -vvv.",
            error_type="InternalError",
            exception=traceback.format_exc(),
        )
    module.exit_json(**with_unit_names(result))
