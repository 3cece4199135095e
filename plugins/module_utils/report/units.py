"""Figures as an operator reads them: bytes in IEC units, durations in hours, minutes and seconds.

The record keeps raw integers (``100073472``); every human-facing output (the wave report, the
playbook's progress lines, the summary at the end of a cutover) formats them here, so they agree.
"""

from __future__ import annotations

from typing import Optional

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def human_bytes(count: Optional[float]) -> str:
    """``95.4 MiB``; whole bytes below 1 KiB, one decimal above."""
    if count is None:
        return "-"
    value, unit = float(count), 0
    while abs(value) >= 1024 and unit < len(_UNITS) - 1:
        value, unit = value / 1024, unit + 1
    return f"{int(value)} B" if unit == 0 else f"{value:.1f} {_UNITS[unit]}"


def human_rate(bytes_per_s: Optional[float]) -> str:
    return "-" if not bytes_per_s else f"{human_bytes(bytes_per_s)}/s"


def human_duration(seconds: Optional[float]) -> str:
    """``45 s``, ``12 min 03 s``, ``2 h 05 min``, ``3 d 04 h``: the two largest units, as a clock is read."""
    if seconds is None:
        return "-"
    whole = round(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours:02d} h"
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"
