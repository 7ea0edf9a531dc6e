"""Turn source results into budget figures (pure functions, no I/O)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import lru_cache

from budget_exporter.config import BudgetConfig, Config
from budget_exporter.model import SpendLine, Window
from budget_exporter.periods import elapsed_fraction, forecast_floor_fraction, window_at
from budget_exporter.state import SourceState


@dataclass(frozen=True)
class BudgetView:
    """One budget's figures for its current window."""

    name: str
    currency: str
    period: str
    labels: tuple[tuple[str, str], ...]
    window: Window
    limit: Decimal
    spend: Decimal
    forecast: Decimal
    warning_ratio: float
    stop_ratio: float

    @property
    def usage_ratio(self) -> float:
        return float(self.spend / self.limit)

    @property
    def forecast_ratio(self) -> float:
        return float(self.forecast / self.limit)

    @property
    def state(self) -> str:
        ratio = self.usage_ratio
        if ratio >= 1:
            return "exceeded"
        if ratio >= self.stop_ratio:
            return "stop"
        if ratio >= self.warning_ratio:
            return "warning"
        return "ok"


@lru_cache(maxsize=1024)
def _pattern(value: str) -> re.Pattern[str] | None:
    if len(value) >= 2 and value.startswith("/") and value.endswith("/"):
        return re.compile(value[1:-1])
    return None


def line_matches(line: SpendLine, match: Mapping[str, str]) -> bool:
    """Exact values, or ``/regex/`` (fully anchored); a missing dimension is ``""``."""
    if not match:
        return True
    dims = line.dims
    for key, wanted in match.items():
        value = dims.get(key, "")
        pattern = _pattern(wanted)
        if pattern is None:
            if value != wanted:
                return False
        elif not pattern.fullmatch(value):
            return False
    return True


def compute_budgets(
    config: Config,
    states: Mapping[str, SourceState],
    now: datetime,
    mismatches: Counter[tuple[str, str, str]] | None = None,
) -> list[BudgetView]:
    """Every budget whose sources all have data for its current window.

    ``mismatches`` (if given) receives ``(budget, source, currency)`` counts of
    lines left out for being in another currency than the budget's.
    """
    views = []
    for budget in config.budgets:
        view = _compute(config, budget, states, now, mismatches)
        if view is not None:
            views.append(view)
    return views


def _compute(
    config: Config,
    budget: BudgetConfig,
    states: Mapping[str, SourceState],
    now: datetime,
    mismatches: Counter[tuple[str, str, str]] | None,
) -> BudgetView | None:
    window = window_at(budget.period, now)
    elapsed = max(elapsed_fraction(window, now), forecast_floor_fraction(window))
    spend = forecast = Decimal(0)
    for source in config.budget_sources(budget):
        state = states.get(source.name)
        if state is None or state.result is None or state.window(budget.period) != window:
            return None  # no data for this window yet: show nothing rather than a fake zero
        source_spend = Decimal(0)
        for line in _lines(state.result.lines, budget):
            if line.currency != budget.currency:
                if mismatches is not None:
                    mismatches[(budget.name, source.name, line.currency)] += 1
                continue
            source_spend += line.amount
        spend += source_spend
        forecast += _source_forecast(state, budget, source_spend, elapsed)
    return BudgetView(
        name=budget.name,
        currency=budget.currency,
        period=str(budget.period),
        labels=tuple(sorted(budget.labels.items())),
        window=window,
        limit=budget.limit,
        spend=spend,
        forecast=max(forecast, spend),
        warning_ratio=config.warning_ratio(budget),
        stop_ratio=config.stop_ratio(budget),
    )


def _lines(lines: Iterable[SpendLine], budget: BudgetConfig) -> Iterable[SpendLine]:
    return (ln for ln in lines if ln.period == budget.period and line_matches(ln, budget.match))


def _source_forecast(
    state: SourceState, budget: BudgetConfig, spend: Decimal, elapsed: float
) -> Decimal:
    """The provider's own forecast where it fits the budget, else a linear projection."""
    assert state.result is not None
    if not budget.match:
        for forecast in state.result.forecasts:
            if forecast.period == budget.period and forecast.currency == budget.currency:
                return max(forecast.amount, spend)
    return spend / Decimal(repr(elapsed))
