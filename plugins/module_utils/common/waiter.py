"""One way to wait for remote state: a predicate, a clock, backoff with jitter, a timeout.

Every "wait until the volume is available / the VM is off / the socket serves"
goes through :func:`wait_for`, so timeouts and polling behave the same
everywhere and tests can drive the clock instead of sleeping.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Callable, Optional, TypeVar

from ansible_collections.xms.warm_migration.plugins.module_utils.common.errors import WarmMigrationError

T = TypeVar("T")


class WaitTimeout(WarmMigrationError):
    """The awaited condition did not hold before the deadline."""


@dataclass(frozen=True)
class Backoff:
    """Polling schedule: first delay, growth factor, ceiling, and +/- jitter fraction."""

    initial: float = 0.5
    factor: float = 1.5
    maximum: float = 10.0
    jitter: float = 0.2

    def delays(self, rng: random.Random):
        """Yield successive sleep durations, jittered so many waiters do not poll in step."""
        delay = self.initial
        while True:
            yield delay * (1 + rng.uniform(-self.jitter, self.jitter))
            delay = min(delay * self.factor, self.maximum)


def wait_for(
    predicate: Callable[[], Optional[T]],
    *,
    timeout: float,
    what: str,
    hint: str = "",
    backoff: Backoff = Backoff(),
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    rng: Optional[random.Random] = None,
) -> T:
    """Call ``predicate`` until it returns something truthy, and return that.

    ``predicate`` may raise to abort the wait (e.g. the volume went to
    ``error``): that exception propagates unchanged. On timeout raises
    :class:`WaitTimeout` whose message names ``what`` was awaited.
    """
    deadline = clock() + timeout
    delays = backoff.delays(rng or random.Random())
    while True:
        result = predicate()
        if result:
            return result
        remaining = deadline - clock()
        if remaining <= 0:
            raise WaitTimeout(f"Timed out after {timeout:g}s waiting for {what}", hint=hint)
        sleep(min(next(delays), remaining))
