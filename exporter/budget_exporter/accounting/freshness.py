"""How fresh a budget's figures are, for the check API: each source against its own allowance.

A budget is *stale* when one of the sources it counts has never answered, or
answered last longer ago than that source may be old
(:meth:`budget_exporter.config.loader.Config.max_data_age`).  Judging each source by
its own allowance, not the budget's oldest source by one budget-wide figure,
lets a meter polled every 30 s make a budget stale within minutes of dying,
while the daily bill counted with it may be hours old.

Pure functions: no I/O, no registry lookups.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from budget_exporter.accounting.sourcestate import SourceState
from budget_exporter.config.loader import BudgetConfig, Config
from budget_exporter.providers.base import SourceConfig


@dataclass(frozen=True)
class SourceAge:
    """How old one source's figures are, and how old they may be."""

    name: str
    age: float | None
    """Seconds since its last successful poll; None if it never succeeded."""
    allowed: float
    """Its ``max_data_age`` in seconds."""

    @property
    def stale(self) -> bool:
        return self.age is None or self.age > self.allowed


@dataclass(frozen=True)
class Freshness:
    """The ages of the sources a budget counts."""

    sources: tuple[SourceAge, ...]

    @property
    def age(self) -> float | None:
        """Seconds since the oldest source's last success; None if one never succeeded."""
        if not self.sources or any(s.age is None for s in self.sources):
            return None
        return max(s.age for s in self.sources if s.age is not None)

    @property
    def stale_sources(self) -> tuple[SourceAge, ...]:
        return tuple(s for s in self.sources if s.stale)

    @property
    def stale(self) -> bool:
        return not self.sources or bool(self.stale_sources)


def source_age(
    config: Config, source: SourceConfig, state: SourceState | None, now: float
) -> SourceAge:
    """How old ``source``'s figures (its ``state``) are at ``now``."""
    last = None if state is None else state.last_success
    age = None if last is None else max(0.0, now - last)
    return SourceAge(source.name, age, config.max_data_age(source).total_seconds())


def budget_freshness(
    config: Config, budget: BudgetConfig, states: Sequence[SourceState], now: float
) -> Freshness:
    """The freshness of ``budget``'s figures; ``states`` are the exporter's source states."""
    by_name = {s.name: s for s in states}
    return Freshness(
        tuple(
            source_age(config, source, by_name.get(source.name), now)
            for source in config.polled_sources(budget)
        )
    )
