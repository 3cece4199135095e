"""pyVmomi's faults, translated where they enter: the session's one SOAP stub.

Every call the adapter makes - a method of a managed object, a property read (pyVmomi reads
properties through the property collector, a method call too) - goes through the stub's
``InvokeMethod``; :func:`guard` wraps it once per session. There:
- an expired or ended session (``NotAuthenticated``) logs in again, once per call, and the call is
  sent again: vCenter ends idle sessions after 30 minutes by default, and a seed can outlast that;
- ``NoPermission`` becomes a :class:`VSphereFault` naming the privilege missing and the object;
- any other fault becomes a :class:`VSphereFault` naming the call and the object (``.fault`` keeps
  vSphere's own, for the few callers that tell faults apart);
- a connection that breaks (reset, closed) is tried again, three times in all, for a call that only
  reads (``Retrieve*``, ``Query*``, ``Find*``), and is :class:`VSphereUnavailableError` otherwise.
"""

from __future__ import annotations

import http.client
import time
from typing import Any, Callable

from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere.errors import VSphereError

try:
    from pyVmomi import vim, vmodl
except ImportError:  # the client reports it
    vim = vmodl = None

ATTEMPTS = 3
_READS = ("Retrieve", "Query", "Find")


class VSphereFault(VSphereError):
    """vSphere answered a call with a fault; ``fault`` is vSphere's own."""

    def __init__(self, message: str, *, fault, hint: str = "", parameter=None) -> None:
        super().__init__(message, hint=hint, parameter=parameter)
        self.fault = fault


class VSphereUnavailableError(VSphereError):
    """The connection to vCenter broke during a call (tried again first when the call only reads)."""


def _name(mo) -> str:
    return f"{type(mo).__name__.rsplit('.', 1)[-1]} {getattr(mo, '_moId', mo)}"


def translate(method: str, mo, fault) -> VSphereFault:
    """The typed error for ``fault``, answered to ``method`` called on ``mo``."""
    if isinstance(fault, vim.fault.NoPermission) and not isinstance(fault, vim.fault.NotAuthenticated):
        target = _name(fault.object) if fault.object is not None else _name(mo)
        return VSphereFault(
            f"the vCenter user lacks the privilege {fault.privilegeId} on {target} (needed for {method})",
            fault=fault,
            parameter="username",
            hint="Grant the user a role with that privilege on the object (docs: the privileges the collection needs)",
        )
    text = getattr(fault, "msg", "") or type(fault).__name__
    return VSphereFault(f"vSphere refused {method} on {_name(mo)}: {text}", fault=fault)


def guard(stub, login: Callable[[], None]) -> None:
    """Make every call through ``stub`` translate its faults; ``login`` logs the session in again."""
    invoke = stub.InvokeMethod

    def guarded(mo, info, args, outerStub=None) -> Any:  # pyVmomi's own keyword
        relogged, method = False, getattr(info, "wsdlName", info.name)  # wsdlName: the API's own name
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return invoke(mo, info, args, outerStub)
            except vim.fault.NotAuthenticated as fault:
                if relogged or method in ("Login", "Logout"):
                    raise translate(method, mo, fault) from None
                relogged = True
                login()
            except vmodl.MethodFault as fault:
                raise translate(method, mo, fault) from None
            except (OSError, http.client.HTTPException) as err:
                if not method.startswith(_READS) or attempt == ATTEMPTS:
                    raise VSphereUnavailableError(
                        f"the connection to vCenter broke during {method} on {_name(mo)}: {err}",
                        hint="Check the network and vCenter's health; run the step again",
                    ) from None
                time.sleep(attempt)
        raise translate(method, mo, vim.fault.NotAuthenticated())  # logged in again, refused again

    stub.InvokeMethod = guarded
