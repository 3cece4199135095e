"""Cutover: switch a seeded migration over to its OpenStack instance.

Steps, in this order, each recorded in the migration record (``cutover_step``)
when done, so a rerun after a failure resumes after the last finished step and
never copies data again that is already on the volumes:

1. ``shutdown``    - the guest is shut down (power-off fallback after a timeout)
                     *before* the final snapshot, so no write is lost;
2. ``final_sync``  - the last delta, from a snapshot of the powered-off VM;
3. ``converted``   - virt-v2v-in-place over the attached volumes (skippable);
                     optionally a boot check of the converted disks under QEMU;
4. ``instance``    - volumes bootable, ports with the source MACs, instance
                     booted from the volumes and ACTIVE (the adapter refuses
                     unless the record says ``cutover``: replicas stay protected);
5. ``completed``   - the source VM is marked migrated.

Rollback before ``instance``: :func:`rollback` powers the source back on and
returns the migration to ``ready``; the volumes stay, so syncs can go on.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

from ansible_collections.xms.warm_migration.plugins.module_utils.common.errors import WarmMigrationError
from ansible_collections.xms.warm_migration.plugins.module_utils.conversion import boot_check as boot
from ansible_collections.xms.warm_migration.plugins.module_utils.conversion import overlay, virt_v2v
from ansible_collections.xms.warm_migration.plugins.module_utils.migration import ownership, store, validation
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.context import MigrationContext
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.errors import (
    PhaseError,
    PreflightError,
    ValidationError,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.initialize import TargetSettings, nic_targets
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.projection import HostTimes
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.record import MigrationState, Phase, utcnow
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.settings import SyncSettings
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.sync import source_disks, sync_held
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.validation import ValidationSettings
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack import instance as os_instance
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack import preflight as os_preflight
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack import volumes as os_volumes
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack.attach import attach_all
from ansible_collections.xms.warm_migration.plugins.module_utils.vsphere import power as vs_power


@dataclass
class CutoverSettings:
    sync: SyncSettings
    shutdown_timeout: float = 300.0
    power_off_fallback: bool = True
    conversion: virt_v2v.ConversionOptions = field(default_factory=virt_v2v.ConversionOptions)
    boot_check: bool = False
    boot_check_timeout: float = 300.0
    instance_timeout: float = 600.0
    key_name: Optional[str] = None
    security_groups: List[str] = field(default_factory=list)
    downtime_budget: Optional[int] = None  # seconds: sync back to back until the projection fits, then shut down
    validation: ValidationSettings = field(default_factory=ValidationSettings)
    post_migration_snapshot: bool = False  # one Cinder snapshot per volume once the cutover is validated


@dataclass
class CutoverOutcome:
    changed: bool
    steps_done: List[str]
    state: MigrationState
    shutdown: Optional[str] = None
    final_sync: Optional[Dict[str, object]] = None
    conversion: Optional[Dict[str, object]] = None
    boot: Optional[Dict[str, object]] = None
    instance: Optional[Dict[str, object]] = None
    validation: Optional[Dict[str, object]] = None  # the evidence that the guest runs in the cloud
    post_migration_snapshots: Optional[List[str]] = None  # ids, one per volume, in disk order
    downtime_s: Optional[int] = None  # from the guest going down to its instance answering (ACTIVE: validation off)
    timings: Optional[Dict[str, int]] = None  # seconds per step (see MigrationState.cutover_timings)
    warnings: List[str] = field(default_factory=list)
    projection: Optional[Dict[str, object]] = None  # the projected downtime the cutover went (or would go) by
    convergence_syncs: int = 0  # syncs run back to back to fit the downtime budget
    before: Dict[str, object] = field(default_factory=dict)  # the record's view, for diff mode
    after: Dict[str, object] = field(default_factory=dict)


def _view(phase: str, step: str, instance_id: str) -> Dict[str, object]:
    return {"phase": phase, "cutover_step": step or None, "instance_id": instance_id or None}


def _state_view(state: MigrationState) -> Dict[str, object]:
    return _view(state.phase.value, state.cutover_step, state.instance_id)


def _after(state: MigrationState, step: str) -> bool:
    """Whether ``step`` was already done by an earlier run."""
    return bool(state.cutover_step) and STEPS.index(state.cutover_step) >= STEPS.index(step)


def run_cutover(
    ctx: MigrationContext, target: TargetSettings, settings: CutoverSettings, *, check_mode: bool = False
) -> CutoverOutcome:
    """Run (or resume) the cutover of ``ctx``'s migration (the module has checked ``settings``: check_settings)."""
    openstack, migration_id, inv = ctx.openstack, ctx.migration_id, ctx.inventory
    state = store.load(openstack, migration_id)
    if state.phase is Phase.COMPLETED:
        return CutoverOutcome(changed=False, steps_done=[], state=state)
    if not state.seeded:
        raise PhaseError(
            f"migration {migration_id} has not finished its seed (phase '{state.phase.value}')",
            hint="Run block_sync until it reports phase 'ready', then cut over",
        )
    ownership.ensure_free(state, ownership.Observations(settings.sync.state_dir))
    if not state.converted:  # bad scripts or drivers: refuse before the guest goes down
        virt_v2v.check_options(settings.conversion, guest_id=inv.guest_id)
        virt_v2v.check_host(settings.conversion)
    source_disks(inv, state)  # a disk added or removed since init: refuse while the source still runs
    nics = nic_targets(inv, target)
    early_warnings = []
    if not _after(state, "instance"):
        check_target(openstack, state, inv, nics, target, settings)
        early_warnings = address_warnings(nics, target) + windows_warnings(inv, settings.conversion)
    before = _state_view(state)
    convert = not settings.conversion.skip
    if check_mode:
        todo = [s for s in STEPS if not _after(state, s)]
        after = _view(Phase.COMPLETED.value, "completed", state.instance_id or "(new)")
        outcome = CutoverOutcome(changed=True, steps_done=todo, state=state, before=before, after=after)
        outcome.warnings.extend(early_warnings)
        projection = state.projection(convert=convert)
        outcome.projection = projection.as_dict() if projection else None
        if settings.downtime_budget is not None and projection is not None and not _after(state, "shutdown"):
            fits = projection.downtime_s <= settings.downtime_budget
            outcome.warnings.append(
                f"projected downtime {projection.downtime_s:.0f} s "
                + ("fits" if fits else "does not fit yet: the cutover would sync back to back until it fits")
                + f" the budget of {settings.downtime_budget} s"
            )
        return outcome

    outcome = CutoverOutcome(changed=True, steps_done=[], state=state, before=before)
    outcome.warnings.extend(early_warnings)
    with ownership.hold(openstack, migration_id, settings.sync.state_dir, check=_may_cut_over) as held:
        state = outcome.state = held.state  # as read under the hold
        if settings.downtime_budget is not None and not _after(state, "shutdown"):
            _converge(ctx, held, settings, outcome)
        elif not _after(state, "shutdown"):
            projection = state.projection(convert=convert)
            outcome.projection = projection.as_dict() if projection else None
        state.phase = Phase.CUTOVER
        if not state.cutover_step:  # a new cutover (not a rerun): its clock starts now
            state.cutover_marks = {"started": _second()}
        store.save_common(openstack, state)
        try:
            _run_steps(_Run(ctx, held, nics, target, settings, outcome))
        except WarmMigrationError as err:
            if state.cutover_step and "rolled_back" not in err.hint:
                # Past the shutdown the operator must know where things stand: the source is off.
                way_back = (" (the instance runs validated: no rollback)" if _after(state, "validated")
                            else ", or roll back with state: rolled_back")  # fmt: skip
                err.hint = (err.hint + ". " if err.hint else "") + (
                    f"The source VM is off and the migration stays in cutover (last step done: {state.cutover_step}):"
                    f" run the cutover again once fixed (it resumes there){way_back}"
                )
            raise
    outcome.warnings.extend(held.heartbeat.warnings())
    outcome.downtime_s, outcome.timings = state.downtime_s(), state.cutover_timings()
    outcome.after = _state_view(state)
    _remember_times(settings, outcome)
    return outcome


def check_settings(settings: CutoverSettings) -> None:
    """Timeouts that would fail or power the guest off after it went down: refused before anything is read
    (the module calls this before it connects)."""
    timeouts = {"shutdown_timeout": settings.shutdown_timeout, "instance_timeout": settings.instance_timeout}
    for name, value in timeouts.items():
        if value <= 0:
            raise PreflightError(
                f"{name} is {value}: it must be a positive number of seconds",
                parameter=name,
                hint="Nothing was changed and the source still runs; give the seconds to wait (see the module doc)",
            )
    if settings.downtime_budget is not None and settings.downtime_budget <= 0:
        raise PreflightError(
            f"downtime_budget is {settings.downtime_budget}: it must be a positive number of seconds",
            parameter="downtime_budget",
            hint="Nothing was changed; leave it out to cut over without a budget",
        )


def _may_cut_over(state: MigrationState) -> None:
    """The record, read again under the hold, still allows a cutover (it may have moved since the first read)."""
    if state.phase is Phase.COMPLETED or not state.seeded:
        raise PhaseError(
            f"migration {state.migration_id} is in phase '{state.phase.value}'"
            + ("" if state.seeded else " and has not finished its seed"),
            hint="Another run changed it meanwhile: see migration_info, then run again",
        )


MAX_CONVERGENCE_SYNCS = 5


def _converge(ctx: MigrationContext, held: ownership.Held, settings: CutoverSettings, outcome) -> None:
    """Sync back to back while the source runs until the projected downtime fits the budget.

    The syncs run inside the cutover's hold: no other run takes the migration between them. Each
    sync leaves a smaller delta while the guest changes less than a sync copies; once the projected
    final sync stops shrinking (by a fifth per pass), or after MAX_CONVERGENCE_SYNCS, the budget
    cannot be met: a PhaseError, with the source still running and nothing shut down. A rerun in
    phase ``cutover`` whose shutdown never happened projects and syncs the same way.
    """
    state, budget = held.state, settings.downtime_budget
    convert = not (state.converted or settings.conversion.skip)
    previous = projection = None
    for syncs in range(MAX_CONVERGENCE_SYNCS + 1):
        projection = state.projection(convert=convert)
        if projection is not None:
            outcome.projection, outcome.convergence_syncs = projection.as_dict(), syncs
            if projection.downtime_s <= budget:
                return
            if previous is not None and projection.final_sync_s > 0.8 * previous.final_sync_s:
                break  # the delta no longer shrinks: the guest writes about as fast as a sync copies
            previous = projection
        if syncs == MAX_CONVERGENCE_SYNCS:
            break
        sync_held(ctx, held, settings.sync)
    if projection is None:
        raise PhaseError(f"migration {state.migration_id} cannot project its downtime: no incremental sync yet",
                         parameter="downtime_budget", hint="Run block_sync once more, then cut over")  # fmt: skip
    raise PhaseError(
        f"the projected downtime of {projection.downtime_s:.0f} s does not fit the budget of {budget} s after"
        f" {outcome.convergence_syncs} back-to-back syncs (the guest changes {projection.change_rate * 60 / 1e6:.1f}"
        f" MB/min, a sync copies {projection.copy_rate / 1e6:.1f} MB/s; final delta {projection.final_sync_s:.0f} s,"
        f" conversion {projection.conversion_s:.0f} s, instance {projection.instance_s:.0f} s)",
        parameter="downtime_budget",
        hint="The source is still running and nothing was shut down: raise the budget, cut over in a quieter hour,"
        " or raise bandwidth_limit",
    )


def _remember_times(settings: CutoverSettings, outcome: CutoverOutcome) -> None:
    """What this run measured on this host, for the next projections (best effort)."""
    timings = outcome.timings or {}
    # the instance until its guest answers: what the workload's downtime holds after the conversion
    instance_s = timings.get("instance")
    if instance_s is not None:
        instance_s += timings.get("validated", 0)
    measured = {
        "shutdown_s": timings.get("shutdown") if outcome.shutdown in ("shutdown", "powered_off") else None,
        "conversion_s": timings.get("converted") if (outcome.conversion or {}).get("converted") else None,
        "instance_s": instance_s if outcome.instance else None,
    }
    if any(v is not None for v in measured.values()):
        with contextlib.suppress(OSError):
            HostTimes(settings.sync.state_dir).save(**measured)


def check_target(
    openstack, state: MigrationState, inv, nics, target: TargetSettings, settings: CutoverSettings
) -> None:
    """Every target input the instance step will use, checked read-only while the source still runs.

    Flavor, availability zone, networks and subnets, fixed IPs (in their subnet, unused), the
    source MACs (free, and settable by this project), key pair, security groups, compute and
    port quota. Any failure raises a PreflightError naming its parameter; nothing changed.
    """
    nic_specs = [
        os_preflight.NicTarget(mac=nic.mac, network=m.network, subnet=m.subnet, fixed_ip=target.fixed_ips.get(nic.mac))
        for nic, m in nics
    ]
    checks = os_preflight.preflight(
        openstack, volumes=[], flavor=target.flavor, vcpus=inv.vcpus, ram_mb=inv.memory_mb,
        availability_zone=target.availability_zone, nics=nic_specs, migration_id=state.migration_id,
    )  # fmt: skip
    if all(c.ok for c in checks if c.name == "flavor"):
        checks += os_preflight.instance_checks(
            openstack,
            migration_id=state.migration_id,
            flavor=os_preflight.resolve_flavor(openstack, target.flavor, inv.vcpus, inv.memory_mb),
            nics=nic_specs,
            key_name=settings.key_name,
            security_groups=settings.security_groups,
            server_exists=os_instance.find_server(openstack, state.migration_id) is not None,
        )
    checks += os_preflight.nova_attach_checks(openstack, [d.volume_id for d in state.disks])
    refused = boot.refusal(inv.firmware, len(nics)) if settings.boot_check else None
    if refused:
        checks.append(os_preflight.Check("boot_check", False, f"{refused.message} ({refused.hint})", refused.parameter))
    failed = [c for c in checks if not c.ok]
    if failed:
        where = (
            "The source VM is off (an earlier run shut it down); nothing more changed"
            if _after(state, "shutdown")
            else "The source VM is still running and nothing changed"
        )
        raise PreflightError(
            "the instance step would fail: " + "; ".join(c.message for c in failed),
            parameter=failed[0].parameter,
            hint=f"{where}: fix the input named above, then cut over",
        )


def address_warnings(nics, target: TargetSettings) -> List[str]:
    """An address VMware Tools sees on a NIC that the instance's port will not carry: if the guest sets it
    statically, Neutron's port security drops the guest's traffic (a warning: the guest may lease it)."""
    warnings = []
    for nic, _mapping in nics:
        given = target.fixed_ips.get(nic.mac)
        for address in nic.addresses:
            ip = address.split("/", 1)[0]
            if ip != given:
                warnings.append(
                    f"VMware Tools sees {address} on NIC {nic.mac}, but its port gets "
                    + (f"{given} (fixed_ips)" if given else "an address Neutron chooses")
                    + f": if the guest sets {ip} itself, Neutron drops its traffic; give fixed_ips {{{nic.mac}: {ip}}}"
                )
    return warnings


def windows_warnings(inv, conversion: virt_v2v.ConversionOptions) -> List[str]:
    """What a Windows guest loses that the cutover cannot bring along, said while the source still runs."""
    if not virt_v2v.is_windows(inv.guest_id):
        return []
    warnings = []
    if inv.vtpm:
        warnings.append(
            "the VM has a virtual TPM, whose state stays on vSphere: a volume BitLocker protects with the TPM asks"
            " for its recovery key on the instance, and virt-v2v cannot convert an encrypted system volume;"
            " suspend BitLocker in the guest before the cutover (manage-bde -protectors -disable C:)"
        )
    if not conversion.skip and not inv.tools_running:
        warnings.append(
            "VMware Tools is not running in the guest, so the cutover cannot see the addresses Windows sets"
            " itself: Windows starts its new virtio adapters with DHCP, and only addresses the tools report are"
            " set again; start the tools before the cutover, or note the addresses"
        )
    return warnings


def _second():
    """Now, in whole seconds, as the record keeps it: the run's figures equal the record's."""
    return utcnow().replace(microsecond=0)


def _done(openstack, state: MigrationState, step: str, outcome: CutoverOutcome, when=None) -> None:
    """Record ``step`` as done; its mark is ``when`` it ended (default now)."""
    state.cutover_step = step
    state.heartbeat = _second()
    state.cutover_marks[step] = when or state.heartbeat
    store.save_common(openstack, state)
    outcome.steps_done.append(step)


def _source_stays_off(run: _Run) -> None:
    """The source is off before the final snapshot and before the instance, whatever the record says.

    The power state is read each time, never taken from the record: someone may have powered the
    VM on between two cutover runs (after a failed final sync, say). Before the final delta it is
    simply shut down again. Once the final delta was taken, the guest's new writes are not on the
    volumes: while they are not converted yet, it is shut down and the final delta taken again;
    once converted, CBT cannot bring them over (the conversion changed the volumes), so the
    cutover refuses and says how to start over.
    """
    vsphere, vm, openstack = run.ctx.vsphere, run.ctx.vm, run.ctx.openstack
    state, settings, outcome = run.state, run.settings, run.outcome
    if vs_power.power_state(vsphere, vm) == "poweredOff":
        if not _after(state, "shutdown"):  # shut down before the cutover (by the operator): nothing to wait for
            outcome.shutdown = "already_off"
            _done(openstack, state, "shutdown", outcome)
        return
    if _after(state, "final_sync") and state.converted:
        raise PhaseError(
            f"the source VM of migration {state.migration_id} was powered on after its volumes were converted:"
            " its new writes cannot be brought over",
            hint="Run cutover with state: rolled_back (the next sync copies the disks whole), then cut over again",
        )
    if _after(state, "final_sync"):
        outcome.warnings.append("the source VM ran again after the final sync: shut down again, final delta again")
    outcome.shutdown = vs_power.shutdown_guest(
        vsphere, vm, timeout=settings.shutdown_timeout, power_off_fallback=settings.power_off_fallback
    )
    _done(openstack, state, "shutdown", outcome)  # the final delta runs (again) next


@dataclass
class _Run:
    """One cutover run, built once: what its steps read (the run's context, inputs) and write."""

    ctx: MigrationContext
    held: ownership.Held
    nics: List[Any]
    target: TargetSettings
    settings: CutoverSettings
    outcome: CutoverOutcome

    @property
    def state(self) -> MigrationState:
        return self.held.state


@dataclass(frozen=True)
class Step:
    """A cutover step: ``name`` is recorded as ``cutover_step`` once ``run`` is done (STEP_TABLE order); with
    ``source_off`` the source's power state is read before it runs (see _run_steps)."""

    name: str
    source_off: bool
    run: Callable[[_Run], None]


def _shut_down(run: _Run) -> None:
    seen = {nic.mac: list(nic.addresses) for nic, _mapping in run.nics if nic.addresses}
    if seen:  # VMware Tools sees the guest now; once it is off, only the record remembers (a resumed cutover)
        run.state.guest_addresses = seen
        run.state.guest_gateway = run.ctx.inventory.guest_gateway
        run.state.guest_dns = list(run.ctx.inventory.guest_dns)
    _source_stays_off(run)


def _final_delta(run: _Run) -> None:
    sync = sync_held(run.ctx, run.held, run.settings.sync)
    run.outcome.warnings.extend(sync.warnings)
    run.outcome.final_sync = {
        "kind": sync.kind,
        "bytes": sync.bytes_copied,
        "duration_seconds": round(sync.duration_s, 3),
        "disks": sync.disks,
    }
    _done(run.ctx.openstack, run.state, "final_sync", run.outcome)


def _convert(run: _Run) -> None:
    state, settings, outcome, openstack = run.state, run.settings, run.outcome, run.ctx.openstack
    if state.needs_full_resync and not state.converted:
        # A conversion's commit stopped part-way (killed): some of its writes are on the volumes. They are
        # copied whole again from the stopped source first, a copy that resumes if it is interrupted in turn.
        # (A conversion stopped before its commit wrote nothing there: its overlays are simply made anew.)
        outcome.warnings.append(
            "an earlier conversion stopped while writing the volumes: they were copied whole from the stopped"
            " source before converting again"
        )
        sync_held(run.ctx, run.held, settings.sync)
    convert = not state.converted and not settings.conversion.skip
    converted_at = None  # when the conversion ended: the boot check's time is its own mark
    if convert or settings.boot_check:
        with attach_all(
            openstack,
            [d.volume_id for d in state.disks],
            mode=settings.sync.attach_mode,
            server_id=settings.sync.conversion_server,
            as_file=True,
        ) as devices:
            if not convert:  # converted by an earlier run: the check boots the volumes themselves (read-only)
                converted_at = _second()
                _boot_check(run, devices, "raw")
            else:
                with overlay.overlays(devices, settings.sync.state_dir, state.migration_id) as layers:
                    result = virt_v2v.convert_in_place(
                        layers,
                        settings.conversion,
                        name=run.ctx.vm_name,
                        nics=[
                            virt_v2v.nic_identity(
                                nic.mac,
                                nic.guest_name,
                                state.guest_addresses.get(nic.mac, ()),
                                state.guest_gateway,
                                state.guest_dns,
                            )
                            for nic, _mapping in run.nics
                        ],
                        guest_id=run.ctx.inventory.guest_id,
                        fmt=overlay.FORMAT,
                        firmware=run.ctx.inventory.firmware,
                    )
                    outcome.conversion = result.as_dict()
                    if settings.boot_check:
                        converted_at = _second()
                        _boot_check(run, layers, overlay.FORMAT)
                    # Only now are the volumes written: from the commit's first byte they match no source
                    # snapshot, so a rollback from here on, even after a crash, copies them whole.
                    state.needs_full_resync = True
                    store.save_common(openstack, state)
                    overlay.commit(layers)
                state.converted = True
                store.save_common(openstack, state)
                converted_at = converted_at or _second()
                if settings.boot_check:  # the commit's seconds count with the boot check's
                    state.cutover_marks["boot_checked"] = _second()
    elif settings.conversion.skip:
        outcome.conversion = {"converted": False, "skipped": True}
    _done(openstack, state, "converted", outcome, when=converted_at)


def _boot_check(run: _Run, devices: List[str], fmt: str) -> None:
    """The boot check of ``devices``: the NICs the guest's configuration names (pinned by this run's
    conversion) must come up, with the static addresses the conversion found."""
    required, addresses = boot.expectations(run.outcome.conversion)
    run.outcome.boot = boot.boot_check(
        devices,
        macs=[nic.mac for nic, _mapping in run.nics],
        required=required,
        addresses=addresses,
        firmware=run.ctx.inventory.firmware,
        fmt=fmt,
        timeout_s=run.settings.boot_check_timeout,
    ).as_dict()
    run.state.cutover_marks["boot_checked"] = _second()


def _boot_instance(run: _Run) -> None:
    state, target, settings, inv = run.state, run.target, run.settings, run.ctx.inventory
    server = os_instance.create_instance(
        run.ctx.openstack,
        state.migration_id,
        name=target.instance_name or inv.name,
        flavor=target.flavor,
        vcpus=inv.vcpus,
        ram_mb=inv.memory_mb,
        volume_ids=[d.volume_id for d in state.disks],
        nics=[
            os_instance.NicSpec(mac=nic.mac, network=m.network, subnet=m.subnet, fixed_ip=target.fixed_ips.get(nic.mac))
            for nic, m in run.nics
        ],
        availability_zone=target.availability_zone,
        key_name=settings.key_name,
        security_groups=settings.security_groups,
        image_properties=image_properties(inv),
        timeout=settings.instance_timeout,
    )
    state.instance_id = server.id
    run.outcome.instance = server.as_dict()
    _done(run.ctx.openstack, state, "instance", run.outcome)


def _validate(run: _Run) -> None:
    """Completion is proven in the cloud: the instance's guest must show that it runs (validation.py).

    A guest that shows nothing in time leaves its instance stopped, the source off and the migration in
    cutover at 'instance': a rerun starts the instance and validates again; validation off keeps the
    instance as it is; state rolled_back deletes it and powers the source on."""
    state, settings, openstack = run.state, run.settings.validation, run.ctx.openstack
    # running in every case: a rerun after a failed validation finds the instance stopped
    os_instance.set_running(openstack, state.instance_id, True, run.settings.instance_timeout)
    if not settings.enabled:
        state.validation, run.outcome.validation = "off", {"enabled": False}
        _done(openstack, state, "validated", run.outcome)
        return
    server_id = state.instance_id
    result = validation.validate(os_instance.fixed_ips(openstack, server_id),
                                 lambda: os_instance.console_output(openstack, server_id), settings)  # fmt: skip
    run.outcome.validation = result.as_dict()
    seen = ", ".join(e.check if e.check == "console" else f"{e.check} {e.target}" for e in result.evidence if e.ok)
    seen = seen or "nothing"
    if result.passed:
        state.validation = f"passed in {result.took_s:.0f} s: {seen}"
        _done(openstack, state, "validated", run.outcome)
        return
    state.validation = f"failed after {result.took_s:.0f} s: no answer from {result.summary()} (seen: {seen})"
    store.save_common(openstack, state)
    os_instance.set_running(openstack, state.instance_id, False, run.settings.instance_timeout)
    raise ValidationError(
        f"instance {state.instance_id} is ACTIVE, but its guest showed no sign of running within"
        f" {settings.timeout_s} s: {state.validation}",
        parameter="validation",
        hint="The instance was stopped. Look at its console; run the cutover again to start it and validate"
        " again, or with validation enabled: false to keep it as it is, or roll back with state: rolled_back"
        " (deletes the instance and its ports, powers the source on)",
    )


def _complete(run: _Run) -> None:
    state = run.state
    if run.settings.post_migration_snapshot:
        # After validation, before the phase says completed: a failure here is resumed by a rerun.
        run.outcome.post_migration_snapshots = os_volumes.post_migration_snapshots(
            run.ctx.openstack, state.migration_id, [d.volume_id for d in state.disks], run.settings.instance_timeout
        )
    vs_power.mark_migrated(
        run.ctx.vsphere,
        run.ctx.vm,
        note=f"Migrated to OpenStack instance {state.instance_id} "
        f"by xms.warm_migration ({state.migration_id}); do not power on",
    )
    state.phase = Phase.COMPLETED
    _done(run.ctx.openstack, state, "completed", run.outcome)


# The cutover, in order. Up to the instance the source must stay off: once the instance runs on the
# volumes they are never synced again, and the source is only marked migrated.
STEP_TABLE = (
    Step("shutdown", False, _shut_down),
    Step("final_sync", True, _final_delta),
    Step("converted", True, _convert),
    Step("instance", True, _boot_instance),
    Step("validated", True, _validate),
    Step("completed", False, _complete),
)
STEPS = tuple(step.name for step in STEP_TABLE)


def _next_step(state: MigrationState) -> Optional[Step]:
    return next((step for step in STEP_TABLE if not _after(state, step.name)), None)


def _run_steps(run: _Run) -> None:
    """Every step after the one the record names, in STEP_TABLE order.

    Before a step with ``source_off`` the source's power state is read (someone may have powered it
    on between two runs, or during this one): the guest is shut down again and the record goes back
    to ``shutdown``, so the final delta and what follows run again (_source_stays_off refuses once
    the volumes are converted)."""
    while (step := _next_step(run.state)) is not None:
        if step.source_off:
            _shut_down(run)
            if _next_step(run.state) is not step:
                continue
        step.run(run)


def image_properties(inv) -> Dict[str, str]:
    """What Nova needs to know to run the converted guest: virtio disk and NIC, the OS family."""
    return {
        "hw_disk_bus": "virtio",
        "hw_vif_model": "virtio",
        "os_type": "windows" if (inv.guest_id or "").lower().startswith("win") else "linux",
        "hw_firmware_type": "uefi" if inv.firmware == "efi" else "bios",
    }


def rollback(ctx: MigrationContext, settings: CutoverSettings, *, check_mode: bool = False) -> CutoverOutcome:
    """Undo a cutover whose instance was not validated: back to the source, back to ``ready``.

    The cloud is asked, not only the record: an instance of the migration that the record does not
    name (the record may be behind, or someone booted one) runs on the replicas, and powering the
    source on beside it would split the VM in two. The instance a failed validation stopped is the
    record's own: it is deleted with its ports first. Check mode returns what the rollback would do.
    """
    openstack, migration_id = ctx.openstack, ctx.migration_id
    state = store.load(openstack, migration_id)
    if state.phase is Phase.COMPLETED:
        raise PhaseError(
            f"migration {migration_id} is completed: its instance {state.instance_id or '(unknown)'} runs on the"
            " volumes and the source VM is marked migrated; there is no cutover to roll back",
            parameter="state",
            hint="To go back to the source, delete the instance, power the source VM on in vSphere, and start a"
            " new migration with warm_migration_init",
        )
    if state.phase is not Phase.CUTOVER:
        return CutoverOutcome(changed=False, steps_done=[], state=state)
    _may_roll_back(openstack, state)
    ownership.ensure_free(state, ownership.Observations(settings.sync.state_dir))
    todo = ["delete_instance"] if state.instance_id else []
    todo += ["power_on_source", "phase_ready"] + (["full_resync_next"] if _needs_full_resync(state) else [])
    before, after = _state_view(state), _view(Phase.READY.value, "", "")
    if check_mode:
        return CutoverOutcome(changed=True, steps_done=todo, state=state, before=before, after=after)
    check = functools.partial(_may_roll_back, openstack)
    with ownership.hold(openstack, migration_id, settings.sync.state_dir, check=check) as held:
        state = held.state
        if state.instance_id:
            os_instance.delete_instance(openstack, state.instance_id, migration_id,
                                        [nic.mac for nic in ctx.inventory.nics], settings.instance_timeout)  # fmt: skip
        vs_power.power_on(ctx.vsphere, ctx.vm)
        overlay.discard(settings.sync.state_dir, migration_id)  # a killed conversion's, on this host
        state.needs_full_resync = _needs_full_resync(state)
        state.phase, state.cutover_step, state.converted, state.cutover_marks = Phase.READY, "", False, {}
        state.instance_id, state.validation = "", ""
        store.save_common(openstack, state)
    return CutoverOutcome(changed=True, steps_done=todo, state=state, before=before, after=after)


def _needs_full_resync(state: MigrationState) -> bool:
    """A converted volume no longer matches any source snapshot, and CBT cannot say where: copy it all again.
    (A conversion that failed or was killed before its commit left the volumes as the last sync wrote them.)"""
    return state.needs_full_resync or _after(state, "converted") or state.converted


def _may_roll_back(openstack, state: MigrationState) -> None:
    """A rollback is possible: the migration is in cutover, its instance not validated, and no instance
    of it exists in the cloud (asked) but the one the record names."""
    if state.phase is not Phase.CUTOVER:
        raise PhaseError(f"migration {state.migration_id} left phase cutover meanwhile (now '{state.phase.value}')",
                         hint="Another run changed it: see migration_info")  # fmt: skip
    server = os_instance.find_server(openstack, state.migration_id)
    validated = _after(state, "validated")
    if validated or (server is not None and server.id != state.instance_id):
        raise PhaseError(
            f"migration {state.migration_id} already has its instance"
            f" {server.id if server is not None else state.instance_id}"
            + (f" ({server.status})" if server is not None else "")
            + (", validated" if validated else ", which the migration record does not name"),
            hint="It runs on the migration's volumes: delete that instance first if you really want the source back",
        )
