"""A settable clock for the engine."""

from __future__ import annotations


class Clock:
    """A settable clock for the engine (Unix seconds)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
