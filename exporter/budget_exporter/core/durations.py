"""Prometheus-style durations: ``500ms``, ``30s``, ``5m``, ``4h``, ``1d``, ``1h30m``."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
}
MAX_DURATION = timedelta(days=400)
"""Longer than any budget period: beyond it a duration is a typo (and overflows clocks)."""
_PART = re.compile(r"(\d+)(ms|s|m|h|d|w)")
_WHOLE = re.compile(r"(?:\d+(?:ms|s|m|h|d|w))+")


def parse_duration(text: str) -> timedelta:
    """Parse a duration string; raise ``ValueError`` with a readable message."""
    text = text.strip()
    if not _WHOLE.fullmatch(text):
        # The text is not echoed: a mistyped field may hold a secret.
        raise ValueError("invalid duration: use a number and a unit, e.g. 30s, 5m, 4h, 1d")
    try:
        total = sum((int(n) * _UNITS[u] for n, u in _PART.findall(text)), timedelta())
    except OverflowError:
        total = MAX_DURATION * 2
    if total > MAX_DURATION:
        raise ValueError("invalid duration: must be at most 400d")
    if total <= timedelta():
        raise ValueError("invalid duration: must be greater than zero")
    return total


def format_duration(value: timedelta) -> str:
    """The shortest string :func:`parse_duration` reads back as ``value``."""
    ms = round(value.total_seconds() * 1000)
    if ms == 0:
        return "0s"
    out = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        count, ms = divmod(ms, size)
        if count:
            out.append(f"{count}{unit}")
    return "".join(out)
