"""Typed errors of the copy engine; each names what failed, where, and what to do."""

from __future__ import annotations

from typing import Optional

from ansible_collections.xms.warm_migration.plugins.module_utils.common.errors import WarmMigrationError
from ansible_collections.xms.warm_migration.plugins.module_utils.copy.extents import Extent


class CopyError(WarmMigrationError):
    """Base of the copy engine's errors."""


class InvalidUriError(CopyError):
    """An NBD URI that cannot be right, rejected before connecting."""


class PlanError(CopyError):
    """The extents to copy do not fit the source (they belong to another disk or snapshot)."""


class SourceUnreachableError(CopyError):
    """The NBD server could not be reached or refused the connection."""


class TargetError(CopyError):
    """The target cannot be opened or used."""


class TargetTooSmallError(TargetError):
    """The target is smaller than what would be written to it; checked before any write."""


class IOFailure(CopyError):
    """A read or write failed for good (after retries) on one extent."""

    side = ""

    def __init__(self, extent: Extent, cause: str, *, hint: str = "", attempts: int = 1) -> None:
        self.extent = extent
        self.attempts = attempts
        super().__init__(
            f"{self.side} failed at offset {extent.offset} length {extent.length} after {attempts} attempt(s): {cause}",
            hint=hint,
        )


class ReadError(IOFailure):
    side = "reading the source"


class WriteError(IOFailure):
    side = "writing the target"


class CopyStopped(CopyError):
    """The copy was told to stop (another disk of the same sync failed); what it had flushed is journaled."""


class VerifyError(CopyError):
    """Source and target differ after a copy."""

    def __init__(self, mismatches: list, first: Optional[Extent] = None) -> None:
        self.mismatches = mismatches
        where = f"; first at offset {first.offset} length {first.length}" if first else ""
        super().__init__(
            f"verification found {len(mismatches)} extent(s) that differ between source and target{where}",
            hint="Run the sync again with force_full to rewrite the disk, and check the target storage",
        )
