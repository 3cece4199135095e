"""Connecting to the target cloud with openstacksdk, with errors that never echo a secret."""

from __future__ import annotations

import os
from typing import Any, Dict, Optional

from ansible_collections.xms.warm_migration.plugins.module_utils.openstack.errors import (
    AuthenticationError,
    OpenStackError,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack.faults import GuardedConnection

try:
    import openstack
    from keystoneauth1 import exceptions as ks_exceptions
except ImportError:  # reported on connect with what to install
    openstack = None


# Seconds one API request may take. Without a bound a request that a wedged service never
# answers hangs the module (and its async job) for ever; with it the step fails and can be rerun.
API_TIMEOUT_S = 180


class OpenStackClient:
    """An authenticated openstacksdk connection (``.conn``) to the migration's target project; its service
    proxies translate faults where they enter (faults.py)."""

    def __init__(self, conn) -> None:
        self.conn = GuardedConnection(conn)

    @classmethod
    def connect(
        cls,
        *,
        cloud: Optional[str] = None,
        auth: Optional[Dict[str, Any]] = None,
        auth_type: Optional[str] = None,
        region_name: Optional[str] = None,
        validate_certs: Optional[bool] = None,
        ca_cert: Optional[str] = None,
        client_cert: Optional[str] = None,
        client_key: Optional[str] = None,
        interface: Optional[str] = None,
        api_timeout: Optional[int] = None,
    ) -> OpenStackClient:
        """Log in now, so bad credentials fail here with a clear message rather than mid-migration.

        The options are openstack.cloud's (``cloud`` names a cloud of clouds.yaml; the others override it)."""
        if openstack is None:
            raise OpenStackError("openstacksdk is not installed", hint="pip install -r requirements.txt")
        kwargs: Dict[str, Any] = {"api_timeout": api_timeout or API_TIMEOUT_S}
        if cloud:
            kwargs["cloud"] = cloud
        for name, value in (("cert", client_cert), ("key", client_key), ("interface", interface)):
            if value:
                kwargs[name] = value
        if auth:
            kwargs.update(auth=dict(auth), auth_type=auth_type or "password")
        if region_name:
            kwargs["region_name"] = region_name
        if validate_certs is not None:
            kwargs["verify"] = validate_certs
        if ca_cert:
            kwargs["cacert"] = ca_cert
        if cloud:
            where = f"cloud '{cloud}'"
        elif auth:
            where = "the cloud named by auth"
        else:  # openstacksdk reads OS_CLOUD, or the OS_* variables (an AWX OpenStack credential sets them)
            where = (
                f"cloud '{os.environ['OS_CLOUD']}' (OS_CLOUD)" if os.environ.get("OS_CLOUD") else "the OS_* environment"
            )
        try:
            conn = openstack.connect(**kwargs)
            conn.authorize()
            # Every step needs the block-storage API: a region without it (a typo) fails here, by name.
            conn.block_storage.get_endpoint()
        except openstack.exceptions.ConfigException as err:
            region = "region" in str(err).lower()
            raise OpenStackError(
                f"cannot configure a connection to {where}: {err}",
                parameter="region_name" if region else "cloud",
                hint="Name one of the cloud's regions" if region else "Check clouds.yaml (OS_CLIENT_CONFIG_FILE)",
            ) from None
        except ks_exceptions.EndpointNotFound:
            raise OpenStackError(
                f"{where} has no block-storage (Cinder) endpoint in region '{region_name or '(default)'}'",
                parameter="region_name",
                hint="Check region_name against the cloud's catalog (openstack region list)",
            ) from None
        except (ks_exceptions.ClientException, openstack.exceptions.SDKException) as err:
            raise _login_error(err, where, parameter="auth" if auth else "cloud") from None
        return cls(conn)


def _login_error(err: Exception, where: str, parameter: str) -> OpenStackError:
    """Name what went wrong at login; openstacksdk often wraps keystoneauth's error, so look underneath."""
    causes = (err, err.__cause__, err.__context__)
    if any(isinstance(c, ks_exceptions.Unauthorized) for c in causes) or getattr(err, "status_code", None) == 401:
        return AuthenticationError(
            f"{where} refused the credentials",
            parameter=parameter,
            hint="Check the user name, password and project (the password is not shown)",
        )
    unreachable = (ks_exceptions.ConnectFailure, ks_exceptions.DiscoveryFailure, ks_exceptions.SSLError)
    if any(isinstance(c, unreachable) for c in causes):
        return OpenStackError(
            f"cannot reach the identity service of {where}",
            parameter=parameter,
            hint="Check auth_url, the network, and the CA certificate",
        )
    return OpenStackError(f"logging in to {where} failed: {type(err).__name__}", parameter=parameter)
