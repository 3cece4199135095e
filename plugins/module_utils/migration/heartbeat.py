"""The owner's heartbeat: the record says "this migration is held, and alive" for as long as its owner runs.

A timer thread refreshes the owner, the time and the progress every ``EVERY_S`` seconds, through
every phase (orphan removal, snapshot removal, verification, conversion), not only while bytes move:
a phase that reported nothing for ``HEARTBEAT_STALE_S`` would let another host take the migration
over. The copy engine's progress callback only notes numbers; no API call ever runs inside the
engine. Writes are best effort: a slow or failing metadata write (a Cinder 5xx) neither stalls nor
aborts the work it reports on; the failures are counted and the last one kept.
"""

from __future__ import annotations

import threading
from typing import List, Optional

from ansible_collections.xms.warm_migration.plugins.module_utils.migration import store
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.record import MigrationState, utcnow

EVERY_S = 10.0


class Heartbeat:
    """Use as ``with Heartbeat(client, state) as beat:`` around everything the owner does."""

    def __init__(self, client, state: MigrationState, every: Optional[float] = None) -> None:
        self.client, self.state = client, state
        self.every = EVERY_S if every is None else every
        self.base = 0
        self.failures = 0
        self.last_failure = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="xms-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.beat()

    def beat(self) -> None:
        if not self.state.owner:  # the owner has let go (its last write clears the owner): nothing to say
            return
        self.state.heartbeat = utcnow()
        try:
            store.save_heartbeat(self.client, self.state)
        except Exception as err:  # best effort: the work goes on; the next beat tries again
            self.failures += 1
            self.last_failure = f"{type(err).__name__}: {err}"

    def warnings(self) -> List[str]:
        """What the operator should hear of the beats that failed (the work itself went on)."""
        if not self.failures:
            return []
        return [f"{self.failures} progress report(s) to the migration record failed (last: {self.last_failure})"]

    # --- progress, from the copy engine (numbers only) -----------------------------------------
    def expect(self, total: int) -> None:
        self.base = 0
        self.state.progress_done, self.state.progress_total = 0, total

    def disk_done(self, nbytes: int) -> None:
        self.base += nbytes

    def __call__(self, progress) -> None:
        self.state.progress_done = self.base + progress.done
        self.state.rate = progress.rate
