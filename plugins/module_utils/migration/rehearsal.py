"""A test migration: a clone of the replica converted and booted while the syncs go on.

The replica itself is never booted (it stays protected until the cutover): a test migration
takes a consistent point of it - only a replica that one finished sync left whole, every volume
cloned through Cinder while the test holds the migration (ownership.hold), so no sync of it
writes meanwhile on any host - and lets it go as soon as the clones exist. Then the clones go
through the cutover's own conversion step (and boot check, when asked) and boot as a server on a network the operator
names for tests, with MACs Neutron picks, never the source's. It is a dress rehearsal of the
cutover: its conversion and instance times become this host's measured times, which the
downtime projection uses.

What a test creates carries the migration id under TEST_TAG (server, clones) or in its name
(ports), so ``remove_test`` finds and deletes all of it, and nothing that looks for the
migration's own volumes or instance ever finds it. The record's ``test`` field, written by this
module alone (a sync may hold the migration meanwhile), says when, the result, the server and
where the time went.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from ansible_collections.xms.warm_migration.plugins.module_utils.conversion import boot_check as boot
from ansible_collections.xms.warm_migration.plugins.module_utils.conversion import virt_v2v
from ansible_collections.xms.warm_migration.plugins.module_utils.migration import ownership, store
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.context import MigrationContext
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.cutover import image_properties
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.errors import PhaseError, PreflightError
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.projection import HostTimes
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.record import (
    MigrationState,
    MigrationTestRun,
    Phase,
    utcnow,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.settings import SyncSettings
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack import instance as os_instance
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack import preflight as os_preflight
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack import volumes as os_volumes
from ansible_collections.xms.warm_migration.plugins.module_utils.openstack.attach import (
    attach_all,
    release_and_delete,
)


@dataclass
class MigrationTestSettings:
    """Where and how a test migration boots (module parameters, already validated)."""

    sync: SyncSettings
    network: Optional[str] = None
    subnet: Optional[str] = None
    instance_name: Optional[str] = None
    flavor: Optional[str] = None
    availability_zone: Optional[str] = None
    key_name: Optional[str] = None
    security_groups: List[str] = field(default_factory=list)
    conversion: virt_v2v.ConversionOptions = field(default_factory=virt_v2v.ConversionOptions)
    boot_check: bool = False
    boot_check_timeout: float = 300.0
    instance_timeout: float = 600.0


@dataclass
class MigrationTestOutcome:
    changed: bool
    state: MigrationState
    actions: List[str] = field(default_factory=list)  # what was (in check mode: would be) done
    instance: Optional[Dict[str, object]] = None
    conversion: Optional[Dict[str, object]] = None
    boot: Optional[Dict[str, object]] = None
    timings: Dict[str, int] = field(default_factory=dict)
    removed: List[str] = field(default_factory=list)


def run_test(ctx: MigrationContext, settings: MigrationTestSettings, *, check_mode=False) -> MigrationTestOutcome:
    """Clone, convert and boot the replica of ``ctx``'s migration as a test (see the module doc)."""
    openstack, migration_id, inv = ctx.openstack, ctx.migration_id, ctx.inventory
    state = store.load(openstack, migration_id)
    _consistent_replica(state)
    server = os_instance.find_test_server(openstack, migration_id)
    if server is not None and server.status == "ACTIVE" and state.test and state.test.result == "passed":
        return MigrationTestOutcome(changed=False, state=state, instance={"id": server.id, "status": server.status})
    replicas = _replicas(openstack, state)
    flavor = _check(openstack, state, inv, replicas, settings)
    actions = ["clone", "convert" if not settings.conversion.skip else "no_conversion"]
    actions += ["boot_check"] * settings.boot_check + ["instance"]
    leftovers = server is not None or bool(_clones(openstack, state))
    if leftovers:
        actions.insert(0, "remove_earlier_test")
    if check_mode:
        return MigrationTestOutcome(changed=True, state=state, actions=actions)
    outcome = MigrationTestOutcome(changed=True, state=state, actions=actions)
    if leftovers:
        outcome.removed = _remove_resources(openstack, state, settings.instance_timeout)
    started = time.monotonic()
    # Held while Cinder clones: no sync of it runs anywhere, and the replica is checked once more under the hold.
    with ownership.hold(openstack, migration_id, settings.sync.state_dir, check=_consistent_replica):
        # Asked of the replicas while no sync holds them (their clones would be formatted by Nova alike).
        _refuse(os_preflight.nova_attach_checks(openstack, [v.id for v in replicas]))
        taken_at = utcnow()
        clones = os_volumes.clone_volumes(openstack, migration_id, replicas, os_instance.TEST_TAG)
    state.test = MigrationTestRun(at=taken_at.replace(microsecond=0), result="failed")
    clock = _Clock(started, outcome.timings)
    clock.mark("cloned")
    try:
        macs = os_instance.test_macs(migration_id, len(inv.nics))
        if not settings.conversion.skip or settings.boot_check:
            _convert(openstack, clones, inv, macs, settings, outcome, clock)
        server_info = os_instance.create_test_instance(
            openstack, migration_id, name=settings.instance_name or f"{inv.name}-test", flavor=flavor,
            volume_ids=clones, network=settings.network, subnet=settings.subnet, macs=macs,
            availability_zone=settings.availability_zone, key_name=settings.key_name,
            security_groups=settings.security_groups, image_properties=image_properties(inv),
            timeout=settings.instance_timeout,
        )  # fmt: skip
        clock.mark("instance")
        outcome.instance = server_info.as_dict()
        state.test.result, state.test.instance_id = "passed", server_info.id
    finally:
        state.test.timings = outcome.timings
        store.save_test(openstack, state)
    HostTimes(settings.sync.state_dir).save(
        conversion_s=outcome.timings.get("converted"), instance_s=outcome.timings["instance"]
    )
    return outcome


def _consistent_replica(state: MigrationState) -> None:
    """Refuse a replica that is not at one point of the source: a clone of it would boot a torn disk set.

    Torn: a sync stopped part-way (some disk pending on a newer snapshot than the others, or a
    phase still ``seeding``/``syncing``), or the volumes were changed outside a sync (a conversion
    rolled back: ``needs_full_resync``)."""
    if state.phase in (Phase.CUTOVER, Phase.COMPLETED) or not state.seeded:
        raise PhaseError(
            f"migration {state.migration_id} is in phase '{state.phase.value}'"
            + ("" if state.seeded else " and not seeded"),
            hint="A test migration needs a seeded replica before the cutover (run block_sync first)",
        )
    pending = [d.label or str(d.disk_key) for d in state.disks if d.pending_change_id]
    why = ""
    if pending or state.phase is not Phase.READY:
        why = f"a sync stopped part-way (disks {', '.join(pending) or 'none'} pending, phase '{state.phase.value}')"
    elif state.needs_full_resync:
        why = "its volumes were changed outside a sync (a conversion that was rolled back)"
    if why:
        raise PhaseError(
            f"the replica of migration {state.migration_id} is not at one point of the source: {why}",
            hint="Run block_sync until it reports phase 'ready' (it completes the replica), then test again",
        )


def remove_test(ctx: MigrationContext, *, timeout: float = 600, check_mode=False) -> MigrationTestOutcome:
    """Delete the test's server, ports and clones; the record keeps the test, as ``removed``."""
    openstack, migration_id = ctx.openstack, ctx.migration_id
    state = store.load(openstack, migration_id)
    server = os_instance.find_test_server(openstack, migration_id)
    clones = _clones(openstack, state)
    if server is None and not clones:
        return MigrationTestOutcome(changed=False, state=state)
    if check_mode:
        planned = ([f"server:{server.id}"] if server is not None else []) + [f"volume:{c}" for c in clones]
        return MigrationTestOutcome(changed=True, state=state, removed=planned)
    removed = _remove_resources(openstack, state, timeout)
    if state.test is not None:
        state.test.result, state.test.instance_id = "removed", ""
        store.save_test(openstack, state)
    return MigrationTestOutcome(changed=True, state=state, removed=removed)


def _clones(openstack, state: MigrationState) -> List[str]:
    """The clones a test of this migration made (never a volume someone made from one of them)."""
    replicas = [d.volume_id for d in state.disks]
    return os_volumes.find_test_clones(openstack, os_instance.TEST_TAG, state.migration_id, replicas)


def _remove_resources(openstack, state: MigrationState, timeout: float) -> List[str]:
    """The test's server, ports and clones; refused, before anything is deleted, while someone's snapshots
    of a clone exist (they are theirs: deleting the clone would take them along)."""
    clones = _clones(openstack, state)
    kept = os_volumes.snapshots_of(openstack, clones)
    if kept:
        raise PreflightError(
            f"the test's clones have snapshots somebody took ({', '.join(kept)}): removing the clones would"
            " delete them",
            parameter="state",
            hint="Nothing was removed. Delete those snapshots, or keep them elsewhere (a volume from each), then"
            " remove the test again",
        )
    removed = os_instance.delete_test_instance(openstack, state.migration_id, timeout)
    release_and_delete(openstack, clones, cascade=False)  # a test killed while it converted left them attached
    return removed + [f"volume:{c}" for c in clones]


def _replicas(openstack, state: MigrationState) -> List[os_volumes.TargetVolume]:
    """The migration's volumes in the VM's disk order (the boot disk first)."""
    by_id = {v.id: v for v in os_volumes.find_volumes(openstack, state.migration_id)}
    return [by_id[d.volume_id] for d in state.disks]


def _check(openstack, state: MigrationState, inv, replicas, settings: MigrationTestSettings):
    """Everything the test will create, checked read-only first; returns the resolved flavor."""
    virt_v2v.check_options(settings.conversion, guest_id=inv.guest_id)
    virt_v2v.check_host(settings.conversion)
    clones = [
        os_volumes.VolumeSpec(
            disk_key=v.disk_key,
            size_bytes=v.size_bytes,
            volume_type=v.volume_type or None,
            availability_zone=None,
            name=v.name,
        )
        for v in replicas
    ]
    checks = os_preflight.preflight(
        openstack, volumes=clones, flavor=settings.flavor, vcpus=inv.vcpus, ram_mb=inv.memory_mb,
        availability_zone=settings.availability_zone, nics=[], migration_id=state.migration_id,
    )  # fmt: skip
    if settings.network is None:
        checks.append(os_preflight.Check("test_network", False, "no test network named", parameter="test_network"))
    else:
        checks += os_preflight.test_network_checks(
            openstack, network=settings.network, subnet=settings.subnet, ports=len(inv.nics)
        )
    flavor = None
    if all(c.ok for c in checks if c.name == "flavor"):
        flavor = os_preflight.resolve_flavor(openstack, settings.flavor, inv.vcpus, inv.memory_mb)
        checks += os_preflight.instance_checks(
            openstack, migration_id=state.migration_id, flavor=flavor, nics=[], key_name=settings.key_name,
            security_groups=settings.security_groups, server_exists=False,
        )  # fmt: skip
    refused = boot.refusal(inv.firmware, len(inv.nics)) if settings.boot_check else None
    if refused:
        checks.append(os_preflight.Check("boot_check", False, f"{refused.message} ({refused.hint})", refused.parameter))
    _refuse(checks)
    return flavor


def _refuse(checks: List[os_preflight.Check]) -> None:
    failed = [c for c in checks if not c.ok]
    if failed:
        raise PreflightError(
            "the test migration would fail: " + "; ".join(c.message for c in failed),
            parameter=failed[0].parameter or "cloud",
            hint="Nothing was created and the replica is untouched: fix the input named above, then run again",
        )


class _Clock:
    """Seconds per step, each from the end of the step before (as the cutover's timings)."""

    def __init__(self, started: float, timings: Dict[str, int]) -> None:
        self.last, self.timings = started, timings

    def mark(self, step: str) -> None:
        now = time.monotonic()
        self.timings[step], self.last = round(now - self.last), now


def _convert(
    openstack,
    clones: List[str],
    inv,
    macs: List[str],
    settings: MigrationTestSettings,
    outcome: MigrationTestOutcome,
    clock: _Clock,
) -> None:
    """The cutover's conversion (and boot check) on the clones, attached as files: the guest's interface
    names pinned to the test ports' MACs, as the cutover pins them to the source's."""
    with attach_all(
        openstack, clones, mode=settings.sync.attach_mode, server_id=settings.sync.conversion_server, as_file=True
    ) as devices:
        if not settings.conversion.skip:
            nics = [virt_v2v.nic_identity(mac, nic.guest_name, nic.addresses, inv.guest_gateway, inv.guest_dns)
                    for mac, nic in zip(macs, inv.nics)]  # fmt: skip
            outcome.conversion = virt_v2v.convert_in_place(
                devices, settings.conversion, name=f"{inv.name}-test", nics=nics, guest_id=inv.guest_id,
                firmware=inv.firmware,
            ).as_dict()  # fmt: skip
            clock.mark("converted")
        if settings.boot_check:
            required, addresses = boot.expectations(outcome.conversion)
            outcome.boot = boot.boot_check(
                devices, macs=macs, required=required, firmware=inv.firmware,
                timeout_s=settings.boot_check_timeout, addresses=addresses,
            ).as_dict()  # fmt: skip
            clock.mark("boot_checked")
