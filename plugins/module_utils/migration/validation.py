"""Completion proven in the cloud: evidence, gathered after the instance is ACTIVE, that the guest runs.

ACTIVE says Nova started a virtual machine, not that the guest in it came up: a guest whose boot
loader lost its disk, or whose network came up under another name without its address, is ACTIVE
too. The evidence that needs nothing inside the guest is the network: the instance answers at its
fixed IPs (ICMP) and on the TCP ports the operator names, probed from the conversion host. Nova's
console log (``os-getConsoleOutput``) is read as well and reported where the guest writes one (a
serial console) as evidence past the boot loader, but never required: most guests write nothing
there. A guest with no fixed IP to probe passes on its console alone, or not at all.
"""

from __future__ import annotations

import re
import socket
import subprocess
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

# What a console shows once a guest is past its boot loader: a kernel that started (a printk line with
# its timestamp: a "quiet" kernel still prints its warnings), an init that runs, a login prompt.
PAST_BOOT_LOADER = re.compile(
    r"Linux version \d|^\[\s*\d+\.\d{6}\] |Run /\S*init|systemd\[1\]|Welcome to |login: |cloud-init\[\d+\]|"
    r"Windows Boot Manager|Computer is booting, SAC started",
    re.M,
)
PROBE_TIMEOUT_S = 2
POLL_S = 5.0


@dataclass(frozen=True)
class ValidationSettings:
    """What the cutover waits for once the instance is ACTIVE (option ``validation``)."""

    enabled: bool = True
    timeout_s: int = 900
    ping: bool = True
    tcp_ports: Tuple[int, ...] = ()


@dataclass
class Evidence:
    """One thing looked for: ``check`` is ping, tcp or console; ``after_s`` when it was first seen."""

    check: str
    target: str
    ok: bool = False
    after_s: Optional[float] = None
    detail: str = ""


@dataclass
class Validation:
    passed: bool
    took_s: float
    evidence: List[Evidence] = field(default_factory=list)

    def as_dict(self) -> Dict[str, object]:
        return asdict(self)

    def summary(self) -> str:
        missing = [f"{e.check} {e.target}" for e in self.evidence if not e.ok and e.check != "console"]
        return "; ".join(missing) or "no evidence"


def ping(address: str, timeout_s: int = PROBE_TIMEOUT_S) -> bool:
    """One ICMP echo from this host (iputils' ping: no raw socket of our own, so no root needed)."""
    done = subprocess.run(["ping", "-n", "-q", "-c", "1", "-W", str(timeout_s), address],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)  # fmt: skip
    return done.returncode == 0


def tcp_open(address: str, port: int, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def validate(
    addresses: Sequence[str],
    console: Callable[[], str],
    settings: ValidationSettings,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Validation:
    """Probe until every network check has answered once, or ``settings.timeout_s`` has passed.

    ``console`` returns the instance's console log so far. The network checks decide; when there is
    none (no fixed IP, or ping off and no port named), the console's evidence does."""
    wanted = [Evidence("ping", a) for a in addresses if settings.ping]
    wanted += [Evidence("tcp", f"{a}:{p}") for a in addresses for p in settings.tcp_ports]
    seen_console = Evidence("console", "console log")
    start = clock()
    while True:
        now = round(clock() - start, 1)
        for evidence in (e for e in wanted if not e.ok):
            host, _sep, port = evidence.target.rpartition(":") if evidence.check == "tcp" else (evidence.target, "", "")
            if ping(host) if evidence.check == "ping" else tcp_open(host, int(port)):
                evidence.ok, evidence.after_s = True, now
        if not seen_console.ok:
            _read_console(console, seen_console, now)
        decided = all(e.ok for e in wanted) if wanted else seen_console.ok
        if decided or clock() - start >= settings.timeout_s:
            for evidence in wanted:
                evidence.detail = evidence.detail or ("answered" if evidence.ok else "no answer")
            return Validation(passed=decided, took_s=round(clock() - start, 1), evidence=[*wanted, seen_console])
        sleep(POLL_S)


def _read_console(console: Callable[[], str], evidence: Evidence, now: float) -> None:
    text = console() or ""
    match = PAST_BOOT_LOADER.search(text)
    if match:  # the line it is on, as the operator would look for it in the console
        start, end = text.rfind("\n", 0, match.start()) + 1, text.find("\n", match.end())
        line = text[start : end if end >= 0 else len(text)].strip()[:80]
        evidence.ok, evidence.after_s, evidence.detail = True, now, f"shows {line!r}"
    else:
        evidence.detail = "silent (the guest writes no serial console)" if not text.strip() else "no boot seen yet"
