"""Holding a migration: the one way a sync, a cutover, a seed import, a test migration or a rollback
takes a migration for itself, keeps it while it works, and lets it go.

``hold`` does, in this order: the conversion host's lock (lock.py); the record loaded again under
that lock (a decision taken on a record read before it, say before an hours-long checksum pass,
could be stale); the holder's own checks of phase and record; the check that no other host holds
it; the claim (owner and heartbeat written); the claim read back; the heartbeat timer; and, on every
way out, the release, guarded so that a failed last write never hides the error that ended the
work.

Why a read-back: Cinder's metadata has no compare-and-swap. Two hosts that claim one migration at
the same moment both write; the record's copies are merged by revision (store.py), and the
read-back tells the loser, which then stops before changing anything. A read made after both
writes have landed settles it; one made before the other host's write has not: a shared store
without compare-and-swap offers no more. The host lock makes this a race between hosts only.

Who "this host" is: a boot of this machine (the kernel's boot id), not its hostname: cloned
conversion hosts share hostnames, and a record's owner that ran in this boot is decided by the
flock alone (a dead process holds none). An owner of another boot, or another machine, holds the
migration until this host has seen its heartbeat unchanged for ``HEARTBEAT_STALE_S`` by its own
clock: the observations are kept in the state directory (``Observations``), so staleness never
compares two hosts' clocks (as Kubernetes' leader election keeps its observed time locally).
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

from ansible_collections.xms.warm_migration.plugins.module_utils.migration import record, store
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.errors import MigrationBusyError
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.heartbeat import Heartbeat
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.lock import host_lock, on_this_host, owner_id
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.record import (
    MigrationState,
    Phase,
    format_time,
    utcnow,
)


class Observations:
    """What this host has seen of other hosts' heartbeats, by its own clock (``<state_dir>/observed``).

    A heartbeat is stale when this host has seen the same owner with the same beat for
    ``HEARTBEAT_STALE_S``: only this host's clock is read, so two hosts' clocks need not agree.
    The first look at a beat is never stale; a host that has never looked waits the whole limit."""

    def __init__(self, state_dir: str) -> None:
        self.directory = os.path.join(state_dir, "observed")

    def unchanged_for(self, state: MigrationState) -> float:
        """Seconds this host has seen ``state``'s owner and beat unchanged (0 at the first look)."""
        seen = (state.owner, format_time(state.heartbeat))
        path = os.path.join(self.directory, f"{state.migration_id}.json")
        now = time.time()
        try:
            with open(path) as handle:
                old = json.load(handle)
            if (old["owner"], old["beat"]) == seen:
                return max(0.0, now - float(old["since"]))
        except (OSError, ValueError, KeyError, TypeError):
            pass  # none yet, or unreadable: this is the first look
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as handle:
            json.dump({"owner": seen[0], "beat": seen[1], "since": now}, handle)
        os.replace(tmp, path)
        return 0.0


def ensure_free(state: MigrationState, observations: Optional[Observations]) -> None:
    """Refuse when another host holds ``state``'s migration and its heartbeat still moves.

    Without ``observations`` (a step that keeps no state directory, such as initialize) any owner
    of another host holds it."""
    if not state.owner or on_this_host(state.owner):
        return
    held_for = observations.unchanged_for(state) if observations is not None else 0.0
    if observations is not None and held_for >= record.HEARTBEAT_STALE_S:
        return  # its beat stopped long ago, as this host saw it: its process is gone
    last = f" (last beat {state.heartbeat:%H:%M:%S} UTC by its clock)" if state.heartbeat else ""
    raise MigrationBusyError(
        f"migration {state.migration_id} is held by {state.owner}{last}",
        hint="Wait for it to finish (see migration_info for its progress), then run again; a holder whose"
        f" beat stays unchanged for {record.HEARTBEAT_STALE_S:.0f} s as this host sees it is taken over",
    )


@dataclass
class Held:
    """A migration this run holds: its state (kept current by the holder) and the heartbeat timer."""

    state: MigrationState
    heartbeat: Heartbeat


@contextmanager
def hold(
    openstack,
    migration_id: str,
    state_dir: str,
    *,
    check: Callable[[MigrationState], None] = lambda _state: None,
    phase: Optional[Phase] = None,
) -> Iterator[Held]:
    """Hold ``migration_id`` for the body of the ``with`` (see the module doc).

    ``check`` sees the record as loaded under the lock and raises to refuse (nothing written yet);
    ``phase``, when given, is recorded with the claim. The error that ends the body is recorded
    as ``last_error``; the owner is cleared on the way out in every case."""
    with host_lock(state_dir, migration_id):
        state = store.load(openstack, migration_id)
        check(state)
        ensure_free(state, Observations(state_dir))
        me = owner_id()
        state.owner, state.heartbeat, state.last_error = me, utcnow(), ""
        if phase is not None:
            state.phase = phase
        store.save_common(openstack, state)
        now_held_by = store.load(openstack, migration_id).owner
        if now_held_by != me:
            raise MigrationBusyError(
                f"migration {migration_id} was claimed by {now_held_by or 'another run'} at the same moment",
                hint="Nothing was changed by this run; run it again once the other one has finished",
            )
        try:
            with Heartbeat(openstack, state) as beat:
                yield Held(state, beat)
        except Exception as err:  # recorded as last_error, then re-raised
            state.last_error = str(err)
            raise
        finally:
            state.owner, state.heartbeat = "", None
            state.progress_done = state.progress_total = 0
            try:
                store.save_common(openstack, state)
            except Exception:  # the run's own error matters more than the failed release
                if not state.last_error:
                    raise
