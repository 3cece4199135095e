"""The one base class for every error the collection raises on purpose.

Engine and adapter code (everything under ``module_utils``) never calls
``fail_json``: it raises a subclass of :class:`WarmMigrationError`, and the
module base turns it into ``fail_json(msg=...)``. Anything else that escapes is
a bug and is reported as one, with the traceback kept out of the result.

Each error says what failed, on which object, why, and what to do. When the
cause is bad input, ``parameter`` names the module parameter to fix, so the
message a user sees reads like: ``Failed to find VM 'web01': no such VM in
datacenter 'DC0' (parameter: vm_name). Check the name or use vm_uuid.``
"""

from __future__ import annotations


class WarmMigrationError(Exception):
    """An expected failure with a message for the operator.

    ``message`` says what failed and why; ``hint`` what to do about it;
    ``parameter`` the offending module parameter, when input is at fault.
    """

    def __init__(self, message: str, *, hint: str = "", parameter: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.parameter = parameter

    def __str__(self) -> str:
        text = self.message
        if self.parameter:
            text += f" (parameter: {self.parameter})"
        if self.hint:
            text += f". {self.hint}"
        return text
