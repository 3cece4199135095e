"""Connecting to vCenter/ESXi with pyvmomi, and waiting for tasks.

Tasks are awaited by reading only ``info.state``/``info.error``/``info.result``
through the property collector: some tasks (removing a snapshot) name an
entity that pyvmomi's full TaskInfo cannot hold, and polling three fields is
cheaper anyway.
"""

from __future__ import annotations

import hashlib
import ssl
from dataclasses import dataclass
from typing import Any, Optional

from ansible_collections.xms.warm_migration.plugins.module_utils.common.waiter import Backoff, wait_for
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere import faults
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere.errors import (
    TaskError,
    VSphereAuthError,
    VSphereError,
)

try:
    from pyVim.connect import Disconnect, SmartConnect
    from pyVmomi import vim, vmodl
except ImportError:  # reported on connect, with what to install
    vim = vmodl = None


@dataclass
class VSphereConnection:
    hostname: str
    username: str
    password: str
    port: int = 443
    validate_certs: bool = True

    def __repr__(self) -> str:  # never show the password, even in a traceback
        return f"VSphereConnection(hostname={self.hostname!r}, username={self.username!r}, port={self.port})"


class VSphereClient:
    """A logged-in session; also the server's SHA-1 thumbprint that nbdkit's vddk plugin checks."""

    def __init__(self, si, conn: VSphereConnection, thumbprint: str) -> None:
        self.si = si
        self.content = si.RetrieveContent()
        self.conn = conn
        self.thumbprint = thumbprint
        faults.guard(si._stub, self._login)

    def _login(self) -> None:
        """Log the session in again (it expired, or was ended by vCenter) with the same credentials."""
        self.content.sessionManager.Login(userName=self.conn.username, password=self.conn.password)

    @classmethod
    def connect(cls, conn: VSphereConnection) -> VSphereClient:
        if vim is None:
            raise VSphereError("pyvmomi is not installed", hint="pip install -r requirements.txt")
        context = ssl.create_default_context()
        if not conn.validate_certs:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        try:
            si = SmartConnect(host=conn.hostname, port=conn.port, user=conn.username, pwd=conn.password,
                              sslContext=context)  # fmt: skip
        except vim.fault.InvalidLogin:
            raise VSphereAuthError(
                f"{conn.hostname} refused the login of '{conn.username}'",
                parameter="password",
                hint="Check the user name and password (the password is not shown)",
            ) from None
        except ssl.SSLError as err:
            raise VSphereError(
                f"TLS with {conn.hostname} failed: {err.reason}",
                parameter="vcenter_validate_certs",
                hint="Trust the vCenter CA, or set vcenter_validate_certs: false in a lab",
            ) from None
        except (OSError, vmodl.MethodFault) as err:
            raise VSphereError(f"cannot reach {conn.hostname}:{conn.port}: {err}", parameter="hostname") from None
        return cls(si, conn, _session_thumbprint(si))

    def close(self) -> None:
        Disconnect(self.si)

    def __enter__(self) -> VSphereClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def wait_task(self, task, what: str, timeout: float = 3600) -> Any:
        """Wait for ``task``; its result, or TaskError with vSphere's message."""

        def done():
            props = self._task_props(task)
            if props.get("info.state") == "error":
                err = props.get("info.error")
                raise TaskError(f"{what} failed: {getattr(err, 'msg', None) or err}")
            return props if props.get("info.state") == "success" else None

        props = wait_for(done, timeout=timeout, what=what, backoff=Backoff(initial=0.1, maximum=2.0))
        return props.get("info.result")

    def _task_props(self, task) -> dict:
        spec = vmodl.query.PropertyCollector.FilterSpec(
            objectSet=[vmodl.query.PropertyCollector.ObjectSpec(obj=task)],
            propSet=[vmodl.query.PropertyCollector.PropertySpec(type=vim.Task,
                                                                pathSet=["info.state", "info.error", "info.result"])],
        )  # fmt: skip
        result = self.content.propertyCollector.RetrieveContents([spec])
        return {p.name: p.val for p in result[0].propSet} if result else {}


def _session_thumbprint(si) -> Optional[str]:
    """SHA-1 of the certificate of the API session's own TLS connection, as AA:BB:... (nbdkit-vddk's form).

    Taken from the connection the login went over, so VDDK is pinned to the very certificate
    that session verified (with vcenter_validate_certs: false, to the one it accepted), never to one
    read over a second, unverified connection where a man in the middle could answer.
    """
    stub = si._stub
    connection = stub.GetConnection()  # the pooled connection of the login (or one made with the same context)
    try:
        der = connection.sock.getpeercert(binary_form=True) if connection.sock else None
    finally:
        stub.ReturnConnection(connection)
    if not der:
        return None
    digest = hashlib.sha1(der).hexdigest().upper()  # the format VDDK wants, not a security choice
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))
