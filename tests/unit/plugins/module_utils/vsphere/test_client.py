"""The VDDK thumbprint is read off the API session's own connection (a named fake stub stands in for pyVmomi's)."""

import hashlib
import socket

from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere.client import _session_thumbprint


class FakeStub:
    """Mock of pyVmomi's SoapStubAdapter pool: one pooled connection whose peer certificate is known."""

    def __init__(self, der: bytes) -> None:
        self.der, self.returned = der, []

    def GetConnection(self):  # pyVmomi's name
        der = self.der

        class Sock:
            def getpeercert(self, binary_form=False):
                assert binary_form
                return der

        class Connection:
            sock = Sock()

        return Connection()

    def ReturnConnection(self, connection):  # pyVmomi's name
        self.returned.append(connection)


class FakeSi:
    def __init__(self, stub):
        self._stub = stub


def test_thumbprint_comes_from_the_session_connection_and_no_other(monkeypatch):
    def no_new_connection(*_args, **_kwargs):
        raise AssertionError("a second connection was opened to read the certificate")

    monkeypatch.setattr(socket, "create_connection", no_new_connection)
    stub = FakeStub(b"the certificate the login verified")
    digest = hashlib.sha1(stub.der).hexdigest().upper()
    assert _session_thumbprint(FakeSi(stub)) == ":".join(digest[i : i + 2] for i in range(0, 40, 2))
    assert len(stub.returned) == 1  # the connection goes back to the pool
