"""Typed errors of the OpenStack adapter."""

from __future__ import annotations

from ansible_collections.xms.warm_migration.plugins.module_utils.common.errors import WarmMigrationError


class OpenStackError(WarmMigrationError):
    """Base of the OpenStack adapter's errors."""


class AuthenticationError(OpenStackError):
    """The cloud refused the credentials (the message never contains them)."""


class NotFoundError(OpenStackError):
    """A named resource (volume type, zone, flavor, network...) does not exist."""


class QuotaError(OpenStackError):
    """The project lacks quota headroom for what the migration needs."""


class MacInUseError(OpenStackError):
    """A source MAC address is already used by a port on its target network."""


class ProtectedReplicaError(OpenStackError):
    """Refused: the migration's volumes are replicas until cutover."""


class AttachError(OpenStackError):
    """A volume could not be attached to (or detached from) the conversion host."""


class InstanceError(OpenStackError):
    """The instance could not be created or did not become ACTIVE."""
