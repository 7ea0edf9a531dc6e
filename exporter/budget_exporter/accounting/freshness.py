"""How fresh a budget's figures are, for the check API: each source against its own
``max_data_age`` (see docs/check-api.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol, TypeVar

from budget_exporter.accounting.sourcestate import ConfiguredSource, SourceState
from budget_exporter.config.schema import BudgetConfig, Config
from budget_exporter.core.model import Period

S = TypeVar("S", bound=ConfiguredSource, contravariant=True)


class DataAges(Protocol[S]):
    """What freshness reads of the configuration: how old a source's figures may be
    (:class:`~budget_exporter.config.schema.Config` has it)."""

    def max_data_age(self, source: S, /) -> timedelta: ...


@dataclass(frozen=True)
class SourceAge:
    """How old one source's figures are, and how old they may be."""

    name: str
    age: float | None
    """Seconds since its last successful poll (of the budget's window: see
    :meth:`SourceState.success_of`); None if it never succeeded."""
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
    config: DataAges[S],
    source: S,
    state: SourceState | None,
    now: float,
    period: Period | None = None,
) -> SourceAge:
    """How old ``source``'s figures (its ``state``) are at ``now``; those of ``period``
    when given (a window that failed alone keeps older figures than the others)."""
    if state is None:
        last = None
    else:
        last = state.last_success if period is None else state.success_of(period)
    age = None if last is None else max(0.0, now - last)
    return SourceAge(source.name, age, config.max_data_age(source).total_seconds())


def budget_freshness(
    config: Config, budget: BudgetConfig, states: Sequence[SourceState], now: float
) -> Freshness:
    """The freshness of ``budget``'s figures; ``states`` are the exporter's source states."""
    by_name = {s.name: s for s in states}
    return Freshness(
        tuple(
            source_age(config, source, by_name.get(source.name), now, budget.period)
            for source in config.polled_sources(budget)
        )
    )
