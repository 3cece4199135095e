"""Errors of the migration lifecycle (the adapters and the engine have their own)."""

from __future__ import annotations

from ansible_collections.xms.warm_migration.plugins.module_utils.common.errors import WarmMigrationError


class MigrationNotFoundError(WarmMigrationError):
    """No volume in the target project carries a record of this migration."""


class MigrationBusyError(WarmMigrationError):
    """Another sync or cutover of the same migration is running."""


class PhaseError(WarmMigrationError):
    """The step asked for does not fit the migration's phase (e.g. cutover before the seed)."""


class PreflightError(WarmMigrationError):
    """A preflight check failed; nothing was created."""


class StateDirError(WarmMigrationError):
    """The conversion host's state directory cannot hold the lock and the resume journals."""


class MalformedRecordError(WarmMigrationError):
    """The volumes of a migration carry a record that cannot be used (hand-made, copied, unparsable)."""


class ValidationError(WarmMigrationError):
    """The instance is ACTIVE but showed no evidence, within the time given, that its guest runs."""
