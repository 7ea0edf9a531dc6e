"""Which sources feed which budget: the rows of ``budget_source_info``.

A source feeds a budget when the budget's figures come from it:

* one of the budget's ``sources`` (all sources when unset), unless the budget
  has a ``match`` and the source's last result has lines for the budget's
  period of which none passes the match (then it cannot contribute: its lines
  are all filtered out).  A source with no lines for that period yet, or not
  polled yet, is kept: it could contribute as soon as it has spend;
* the source named by ``limit_from`` (the budget's limit, and without
  ``sources`` its spend too, come from it).

Lines in another currency than the budget's still count as "could contribute":
they are left out of the sum and counted by ``budget_currency_mismatch_lines``,
which is the place to see that.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from budget_exporter.accounting.budgets import IndexCache, LineIndexes
from budget_exporter.accounting.sourcestate import SourceState
from budget_exporter.config.loader import BudgetConfig, Config


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


def _could_contribute(budget: BudgetConfig, state: SourceState | None, lookup: LineIndexes) -> bool:
    if not budget.match or state is None or state.result is None:
        return True
    lines = lookup.get(state, budget.period)
    return not len(lines) or bool(lines.select(budget.match))


def _provider(config: Config, source: str) -> str:
    found = config.source_named(source)
    return found.provider if found is not None else ""
