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
from typing import Callable, Dict, List, Optional

from ansible_collections.xms.warm_migration.plugins.module_utils.copy.copier import Progress
from ansible_collections.xms.warm_migration.plugins.module_utils.migration import store
from ansible_collections.xms.warm_migration.plugins.module_utils.migration.record import MigrationState, utcnow

EVERY_S = 10.0


class Heartbeat:
    """Use as ``with Heartbeat(client, state) as beat:`` around everything the owner does."""

    def __init__(self, client, state: MigrationState, every: Optional[float] = None) -> None:
        self.client, self.state = client, state
        self.every = EVERY_S if every is None else every
        self._done: Dict[int, int] = {}  # per disk: bytes handled
        self._rates: Dict[int, float] = {}  # per disk: bytes per second now
        self._lock = threading.Lock()
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

    # --- progress, from the copy engines (numbers only) -----------------------------------------
    def expect(self, total: int) -> None:
        """A new run of copies will handle ``total`` bytes (the progress total)."""
        with self._lock:
            self._done, self._rates = {}, {}
        self.state.progress_done, self.state.progress_total = 0, total

    def disk(self, key: int) -> Callable[[Progress], None]:
        """The progress callback of one disk's copy; the disks of a sync copy at once, so they add up."""

        def report(progress: Progress) -> None:
            self._note(key, progress.done, progress.rate)

        return report

    def disk_done(self, key: int, nbytes: int) -> None:
        """Disk ``key`` handled all its ``nbytes``; it no longer adds to the rate."""
        self._note(key, nbytes, 0.0)

    def _note(self, key: int, done: int, rate: float) -> None:
        with self._lock:
            self._done[key], self._rates[key] = done, rate
            self.state.progress_done = sum(self._done.values())
            self.state.rate = sum(self._rates.values())
