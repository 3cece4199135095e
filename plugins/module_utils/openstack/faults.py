"""openstacksdk's faults, translated where they enter: every call on a service proxy of the connection.

The adapter's code calls ``client.conn.block_storage.create_attachment(...)`` and so on; the
connection it holds is a :class:`GuardedConnection`, whose service proxies run each call through
:func:`call`. There a 4xx answer becomes a typed error naming the call and what the service said
(403: what the project's user may not do; 404: :class:`NotFoundError`; an over-quota answer:
:class:`QuotaError`), a 5xx answer or a service that does not answer becomes
:class:`OpenStackUnavailableError`, tried again (three times in all, 1 s and 2 s apart) when the call
is idempotent - a read, a list, a metadata merge, a delete - and never when it creates something.
A list (a generator in openstacksdk) is read whole inside the call, so its faults are translated too.
"""

from __future__ import annotations

import functools
import time
import types
from typing import Any, Callable

from ansible_collections.xms.warm_migration.plugins.module_utils.openstack.errors import (
    AuthenticationError,
    NotFoundError,
    OpenStackError,
    QuotaError,
)

try:
    from keystoneauth1 import exceptions as ks_exceptions
    from openstack import exceptions as sdk_exceptions
except ImportError:  # the client reports it on connect
    ks_exceptions = sdk_exceptions = None

SERVICES = ("block_storage", "compute", "network", "identity", "key_manager", "image", "placement")
ATTEMPTS = 3
# Calls that may be sent again after a 5xx or no answer: they read, merge the same values, or delete.
_IDEMPOTENT = ("get_", "find_", "set_volume_metadata", "delete_", "wait_for_delete")


class OpenStackUnavailableError(OpenStackError):
    """A service answered 5xx or not at all (tried again first when the call is idempotent)."""


class OpenStackRefusedError(OpenStackError):
    """A service refused the request (4xx): the request, or the object it names, is at fault."""


def translate(what: str, err: Exception) -> Exception:
    """The typed error for ``err`` raised by ``what`` (``service.method``); anything not openstacksdk's or
    keystoneauth's is returned unchanged (it is not a fault of the cloud)."""
    if isinstance(err, OpenStackError):
        return err
    if sdk_exceptions is not None and isinstance(err, sdk_exceptions.HttpException):
        typed = _http(what, err)
        typed.status_code = err.status_code  # what the service answered: a caller may tell "refused" from "lost"
        return typed
    unreachable = ()
    if ks_exceptions is not None:
        unreachable += (ks_exceptions.ConnectionError, ks_exceptions.RetriableConnectionFailure)
    if sdk_exceptions is not None:
        unreachable += (sdk_exceptions.ResourceTimeout,)
    if unreachable and isinstance(err, unreachable):
        return OpenStackUnavailableError(f"{what}: the service did not answer ({type(err).__name__}: {err})",
                                         hint="Check the network and the service; run the step again")  # fmt: skip
    if sdk_exceptions is not None and isinstance(err, sdk_exceptions.SDKException):
        return OpenStackError(f"{what}: {err}")
    return err


def _http(what: str, err) -> OpenStackError:
    """A 4xx or 5xx answer, typed by what the service said."""
    status = err.status_code or 0
    text = str(getattr(err, "details", None) or err).strip()
    if status == 401:
        return AuthenticationError(f"{what}: the cloud no longer accepts this session ({text})",
                                   hint="Check the credentials and that the token was not revoked")  # fmt: skip
    if status == 403:
        return OpenStackRefusedError(
            f"{what}: the project's user may not do this ({text})",
            hint="Ask the cloud's operators for the role or policy that allows it",
        )
    if status == 404:
        return NotFoundError(f"{what}: not found ({text})")
    if status == 413 or "quota" in text.lower():
        return QuotaError(f"{what}: over the project's quota ({text})", hint="Raise the quota or free resources")
    if status >= 500:
        return OpenStackUnavailableError(f"{what}: the service failed (HTTP {status}: {text})",
                                         hint="Check the service's health; run the step again")  # fmt: skip
    return OpenStackRefusedError(f"{what}: refused (HTTP {status}: {text})")


def call(what: str, method: Callable[..., Any], *args, **kwargs) -> Any:
    """``method(*args, **kwargs)`` with its faults translated (see the module doc).

    A list is known by its answer: openstacksdk's lists are generators that send their GETs only
    while read, so a fault while reading one is a list's, and reading it again is safe."""
    name = what.rsplit(".", 1)[-1]
    for attempt in range(1, ATTEMPTS + 1):
        listing = False
        try:
            result = method(*args, **kwargs)
            if isinstance(result, types.GeneratorType):
                listing = True
                return list(result)
            return result
        except Exception as err:  # translated here, or handed on unchanged when it is not the cloud's
            typed = translate(what, err)
            again = isinstance(typed, OpenStackUnavailableError) and (listing or name.startswith(_IDEMPOTENT))
            if not again or attempt == ATTEMPTS:
                if typed is err:
                    raise
                raise typed from None
            time.sleep(attempt)
    raise AssertionError("unreachable")  # the loop returns or raises


class _GuardedProxy:
    """A service proxy whose methods run through :func:`call`; other attributes are the proxy's own."""

    def __init__(self, service: str, proxy) -> None:
        self._service, self._proxy = service, proxy

    def __getattr__(self, name: str):
        value = getattr(self._proxy, name)
        if not callable(value) or name.startswith("_"):
            return value
        return functools.partial(call, f"{self._service}.{name}", value)


class GuardedConnection:
    """An openstacksdk connection whose service proxies translate faults; everything else is the connection's."""

    def __init__(self, conn) -> None:
        self._conn = conn

    def __getattr__(self, name: str):
        value = getattr(self._conn, name)
        if name not in SERVICES:
            return value
        guarded = self.__dict__[name] = _GuardedProxy(name, value)  # one per service, as the connection's own
        return guarded
