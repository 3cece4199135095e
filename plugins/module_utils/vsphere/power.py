"""Shutting the source down for cutover, powering it back on for a rollback, marking it migrated."""

from __future__ import annotations

from ansible_collections.xms.warm_migration.plugins.module_utils.common.waiter import WaitTimeout, wait_for
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere.errors import PowerError
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere.inventory import properties

MIGRATED_NOTE = "xms.warm_migration"


def power_state(client, vm) -> str:
    """``poweredOn``, ``poweredOff`` or ``suspended``, read now (a remembered state can be wrong)."""
    return str(properties(client, vm, ["runtime.powerState"]).get("runtime.powerState"))


def shutdown_guest(client, vm, *, timeout: float, power_off_fallback: bool) -> str:
    """Shut the guest down cleanly; returns ``shutdown``, ``powered_off`` (fallback) or ``already_off``."""
    if power_state(client, vm) == "poweredOff":
        return "already_off"
    try:
        vm.ShutdownGuest()
        wait_for(lambda: power_state(client, vm) == "poweredOff", timeout=timeout, what="the guest to shut down")
        return "shutdown"
    except WaitTimeout:
        if not power_off_fallback:
            raise PowerError(
                f"the guest did not shut down within {timeout:g}s and power_off_fallback is off",
                parameter="shutdown_timeout",
                hint="Shut the guest down yourself, raise shutdown_timeout, or allow power_off_fallback",
            ) from None
    except Exception as err:  # e.g. VMware Tools not running: ShutdownGuest is refused at once
        if not power_off_fallback:
            raise PowerError(f"the guest refused to shut down: {getattr(err, 'msg', err)}",
                             parameter="power_off_fallback") from None  # fmt: skip
    client.wait_task(vm.PowerOffVM_Task(), "powering the VM off")
    return "powered_off"


def power_on(client, vm) -> bool:
    """Power the source on again (rollback); returns whether it was off."""
    if power_state(client, vm) == "poweredOn":
        return False
    client.wait_task(vm.PowerOnVM_Task(), "powering the VM on")
    return True


def mark_migrated(client, vm, note: str) -> bool:
    """Put ``note`` into the VM's annotation so nobody powers the source on by mistake; idempotent."""
    from pyVmomi import vim

    current = properties(client, vm, ["config"])["config"].annotation or ""
    if MIGRATED_NOTE in current:
        return False
    text = f"{note}\n{current}".strip()
    client.wait_task(vm.ReconfigVM_Task(vim.vm.ConfigSpec(annotation=text)), "marking the VM migrated")
    return True
