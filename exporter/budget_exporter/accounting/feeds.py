"""Which sources feed which budget: the rows of ``budget_source_info`` (see docs/metrics.md)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from budget_exporter.accounting.budgets import IndexCache, LineIndexes, provider_budget
from budget_exporter.accounting.sourcestate import SourceState
from budget_exporter.config.schema import BudgetConfig, Config


@dataclass(frozen=True, slots=True)
class Feed:
    """Source ``source`` feeds budget ``budget`` (in ``currency``, over ``period``)."""

    budget: str
    currency: str
    period: str
    source: str
    provider: str
    labels: tuple[tuple[str, str], ...] = ()
    """The budget's static ``labels`` (team...), as on its other series."""


def budget_feeds(
    config: Config, states: Mapping[str, SourceState], indexes: IndexCache | None = None
) -> list[Feed]:
    """Every (budget, source) pair where the source feeds the budget, in config order.

    ``indexes`` are the line indexes :func:`~budget_exporter.accounting.budgets.compute_budgets`
    kept (optional): a ``match`` is then looked up rather than tried on every line.
    """
    feeds = []
    lookup = LineIndexes(indexes)
    for budget in config.budgets:
        if _never_shown(budget, states):
            continue
        for source in _feeding_sources(config, budget, states, lookup):
            feeds.append(
                Feed(
                    budget.name,
                    budget.currency,
                    str(budget.period),
                    source,
                    _provider(config, source),
                    tuple(sorted(budget.labels.items())),
                )
            )
    return feeds


def _feeding_sources(
    config: Config,
    budget: BudgetConfig,
    states: Mapping[str, SourceState],
    lookup: LineIndexes,
) -> list[str]:
    names = [
        s.name
        for s in config.budget_sources(budget)
        if _could_contribute(budget, states.get(s.name), lookup)
    ]
    if budget.limit_from is not None and budget.limit_from.source not in names:
        names.append(budget.limit_from.source)
    return names


def _never_shown(budget: BudgetConfig, states: Mapping[str, SourceState]) -> bool:
    """A budget taking its limit from a provider budget that its source, polled, could not
    give (none by that name, another period or currency, no limit): it has no series, so it
    feeds nothing (a dashboard's budget list would offer a budget without data)."""
    ref = budget.limit_from
    state = states.get(ref.source) if ref is not None else None
    if state is None or state.result is None:
        return False  # not polled yet: it may still be shown
    window = state.window(budget.period)
    return window is not None and provider_budget(budget, states, window) is None


def _could_contribute(budget: BudgetConfig, state: SourceState | None, lookup: LineIndexes) -> bool:
    if not budget.match or state is None or state.result is None:
        return True
    lines = lookup.get(state, budget.period)
    return not len(lines) or bool(lines.select(budget.match))


def _provider(config: Config, source: str) -> str:
    found = config.source_named(source)
    return found.provider if found is not None else ""
