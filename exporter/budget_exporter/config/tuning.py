"""Per-budget settings of the spend-rate alerts (BudgetSpendAnomaly, BudgetBurnRateHigh),
each inherited from ``global`` unless the budget sets it (see docs/alerting.md).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import timedelta
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, Field

from budget_exporter.core.fields import Duration, Money

Factor = Annotated[float, Field(gt=1, allow_inf_nan=False)]
"""How many typical days a day must reach to be an anomaly: more than 1."""
Floor = Annotated[Money, Field(ge=0)]
Span = Annotated[Duration, Field(gt=timedelta(0))]


@dataclass(frozen=True)
class AlertTuning:
    """One budget's resolved settings; the defaults are those of ``global``."""

    anomaly_factor: float = 3.0
    anomaly_min_daily_amount: Decimal = Decimal(10)
    anomaly_min_history: timedelta = timedelta(days=7)
    burn_rate_critical_horizon: timedelta = timedelta(days=3)
    burn_rate_warning_horizon: timedelta = timedelta(days=7)


KEYS = tuple(f.name for f in fields(AlertTuning))
_DEFAULT = AlertTuning()


class GlobalTuning(BaseModel):
    """The keys in ``global``: the defaults of every budget."""

    anomaly_factor: Factor = _DEFAULT.anomaly_factor
    anomaly_min_daily_amount: Floor = _DEFAULT.anomaly_min_daily_amount
    anomaly_min_history: Span = _DEFAULT.anomaly_min_history
    burn_rate_critical_horizon: Span = _DEFAULT.burn_rate_critical_horizon
    burn_rate_warning_horizon: Span = _DEFAULT.burn_rate_warning_horizon


class BudgetTuning(BaseModel):
    """The same keys in a budget: unset means the global value."""

    anomaly_factor: Factor | None = None
    anomaly_min_daily_amount: Floor | None = None
    anomaly_min_history: Span | None = None
    burn_rate_critical_horizon: Span | None = None
    burn_rate_warning_horizon: Span | None = None


def resolve(global_: GlobalTuning, budget: BudgetTuning) -> AlertTuning:
    """The budget's own values, the global ones where it sets none."""
    values: dict[str, Any] = {}
    for key in KEYS:
        own = getattr(budget, key)
        values[key] = getattr(global_, key) if own is None else own
    return AlertTuning(**values)


def horizon_problem(tuning: AlertTuning, budget: BudgetTuning) -> tuple[str, str] | None:
    """``(key, reason)`` if the critical horizon is longer than the warning one."""
    critical, warning = tuning.burn_rate_critical_horizon, tuning.burn_rate_warning_horizon
    if critical <= warning:
        return None
    own_critical = budget.burn_rate_critical_horizon is not None
    key = "burn_rate_critical_horizon" if own_critical else "burn_rate_warning_horizon"
    return key, "burn_rate_critical_horizon must not be longer than burn_rate_warning_horizon"
