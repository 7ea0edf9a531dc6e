"""Value types shared by providers, the poller and the snapshot.

Providers return :class:`PollResult` objects; nothing else in a provider's
output reaches the core.  All amounts are :class:`~decimal.Decimal`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

MAX_AMOUNT = Decimal("1e15")
"""Amounts at or beyond this are a broken answer or a typo, not money (and would
overflow sums): providers and the config reject them."""


TARGET_LABELS = frozenset(
    {"instance", "job", "service", "region", "cluster", "env", "namespace", "pod", "container",
     "node", "endpoint"}
)  # fmt: skip
"""Label names that clash with the target labels Prometheus or its service discovery add."""

DIMENSION_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
"""What a configured dimension may be called: a snake_case Prometheus label name."""

FOCUS_NAMES = {"service": "service_name", "region": "region_id", "account": "sub_account_id"}


def label_clash(name: str) -> str | None:
    """Why ``name`` cannot be a dimension or budget label, or None if it can."""
    if name not in TARGET_LABELS:
        return None
    better = FOCUS_NAMES.get(name, f"exported_{name}")
    return f"label {name!r} clashes with Prometheus target labels; use {better!r}"


class Period(StrEnum):
    """Calendar budget periods, always in UTC."""

    DAILY = "daily"
    MONTHLY = "monthly"
    QUARTERLY = "quarterly"
    YEARLY = "yearly"


@dataclass(frozen=True, slots=True)
class Window:
    """One period window: ``start`` inclusive, ``end`` exclusive, both UTC."""

    period: Period
    start: datetime
    end: datetime


def _freeze(dimensions: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((str(k), str(v)) for k, v in (dimensions or {}).items()))


@dataclass(frozen=True, slots=True)
class SpendLine:
    """Spend so far in ``period``'s current window, for one set of dimensions.

    ``dimensions`` use FinOps FOCUS column names in snake_case
    (``service_name``, ``sub_account_id``, ``region_id``, ``charge_category``,
    ``model``) and become labels of ``budget_source_cost_amount``.
    """

    period: Period
    amount: Decimal
    currency: str
    dimensions: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(
        cls,
        period: Period,
        amount: Decimal,
        currency: str,
        dimensions: Mapping[str, str] | None = None,
    ) -> SpendLine:
        return cls(period, amount, currency.upper(), _freeze(dimensions))

    @property
    def dims(self) -> dict[str, str]:
        return dict(self.dimensions)


@dataclass(frozen=True, slots=True)
class Forecast:
    """A provider's own forecast of the spend at the end of ``period``'s window."""

    period: Period
    amount: Decimal
    currency: str


@dataclass(frozen=True, slots=True)
class Sample:
    """A provider-specific gauge (a quota, a token count, a data freshness time).

    Rendered as ``name{source=…, provider=…, **labels} value``; every sample of
    one ``name`` must carry the same ``documentation``.
    """

    name: str
    documentation: str
    labels: tuple[tuple[str, str], ...]
    value: float

    @classmethod
    def of(
        cls, name: str, documentation: str, value: float, labels: Mapping[str, str] | None = None
    ) -> Sample:
        return cls(name, documentation, _freeze(labels), float(value))


@dataclass(frozen=True, slots=True)
class ProviderBudget:
    """A budget kept in the provider itself (AWS Budgets, GCP Budgets).

    A budget-exporter budget with ``limit_from`` takes its limit (and, unless
    configured, its thresholds) from one of these; with no ``sources`` of its
    own it also takes the provider's ``actual`` and ``forecast`` spend.
    """

    key: str
    period: Period
    limit: Decimal
    currency: str
    actual: Decimal | None = None
    forecast: Decimal | None = None
    warning_ratio: float | None = None
    stop_ratio: float | None = None


@dataclass(frozen=True, slots=True)
class PollResult:
    """Everything one successful poll of a source produced."""

    lines: tuple[SpendLine, ...] = ()
    forecasts: tuple[Forecast, ...] = ()
    samples: tuple[Sample, ...] = ()
    budgets: tuple[ProviderBudget, ...] = ()
    polled_at: datetime | None = field(default=None, compare=False)
    data_through: datetime | None = None
    """A billed source's data horizon: its figures fully cover spend before this
    instant (exported as ``budget_source_data_through_timestamp_seconds``).  None
    when the provider cannot tell; such a source cannot have a meter joined to it."""
    unsettled: tuple[SpendLine, ...] = ()
    """The part of ``lines`` that is spend at or after ``data_through`` (a still-open
    daily bucket, say): left out where a metered source counts that time instead."""
    metered_from: datetime | None = None
    """A metered source joined to a billed one: the billed horizon its figures start
    at (its lines are spend from there, or from the window start if later, to now)."""
    metered: bool = False
    """The lines are metered spend (counted by the applications), not billed spend."""
