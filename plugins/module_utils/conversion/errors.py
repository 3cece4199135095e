"""Errors of the guest conversion and of the boot check after it."""

from __future__ import annotations

from ansible_collections.xms.warm_migration.plugins.module_utils.common.errors import WarmMigrationError


class ConversionError(WarmMigrationError):
    """virt-v2v-in-place (or a user script run with it) failed or timed out; the cutover can be retried."""


class BootCheckError(WarmMigrationError):
    """The converted disks did not boot to userspace with the expected NIC."""
