"""Typed errors of the vSphere adapter."""

from __future__ import annotations

from ansible_collections.xms.warm_migration.plugins.module_utils.common.errors import WarmMigrationError


class VSphereError(WarmMigrationError):
    """Base of the vSphere adapter's errors."""


class VSphereAuthError(VSphereError):
    """vCenter refused the credentials (never echoed)."""


class VmNotFoundError(VSphereError):
    """No VM matches the name, UUID or moref given."""


class TaskError(VSphereError):
    """A vSphere task ended in error."""


class CbtResetError(VSphereError):
    """vSphere cannot answer for a recorded change id (CBT was reset, or the epoch changed): copy the disk whole."""


class PowerError(VSphereError):
    """The guest did not shut down (and powering off was not allowed or failed)."""


class DataPathError(VSphereError):
    """nbdkit with the vddk plugin could not serve a disk."""
