"""The configuration's models: ``global``, its ``check`` block, budgets and the
validated :class:`Config` with the look-ups the rest of the exporter uses."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from functools import cached_property
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from budget_exporter.config.holds import HoldsConfig
from budget_exporter.config.tuning import AlertTuning, BudgetTuning, GlobalTuning, resolve
from budget_exporter.core.fields import Currency, Duration, Money, Ratio, Timeout
from budget_exporter.core.model import MONTHS, WEEKDAYS, Period, label_clash
from budget_exporter.core.periods import supports
from budget_exporter.providers import get_provider
from budget_exporter.providers.base import Provider, SourceConfig

_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_SMALLEST_LIMIT = Decimal("0.000001")
# Labels the exporter sets on budget series (budget_source_info adds source and provider).
_BUDGET_LABELS = frozenset({"budget", "currency", "period", "source", "provider"})
METERED_POLLS_BEFORE_STALE = 3
"""A metered source's figures are stale after this many of its poll intervals (plus its timeout)."""
MIN_BILLED_DATA_AGE = timedelta(hours=6)
NO_TIMEZONE = (
    "is not supported: every period is in UTC, because most providers report UTC days "
    "(see docs/configuration.md#periods-and-time-zones)"
)


def _named(names: tuple[str, ...], what: str) -> Any:
    """A validator reading ``april``/``apr``/``4`` (or ``sunday``/``sun``/``7``) as 1-based."""

    def parse(value: Any) -> int:
        if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= len(names):
            return value
        text = str(value).strip().lower()
        for number, name in enumerate(names, 1):
            if text in (name, name[:3]):
                return number
        raise ValueError(f"must be a {what} name ({names[0]}, {names[1]}, ...)")

    return BeforeValidator(parse)


Month = Annotated[int, _named(MONTHS, "month")]
"""A month, 1 (January) to 12, written as its name."""
Weekday = Annotated[int, _named(WEEKDAYS, "weekday")]
"""A day of the week, 1 (Monday) to 7 (Sunday), written as its name."""


def _refuse_timezone(data: Any) -> Any:
    if isinstance(data, dict) and "timezone" in data:
        raise ValueError(f"timezone {NO_TIMEZONE}")
    return data


class CheckConfig(BaseModel):
    """``global.check``: the pre-operation check API (``POST /api/v1/check``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_data_age: Duration | None = None
    """How old a billed source's figures may be (a source's own ``max_data_age``
    overrides it); unset: twice the source's poll interval, at least 6h.  A metered
    source's allowance is never longer (see :meth:`Config.max_data_age`)."""
    on_stale: Literal["fail_open", "fail_closed"] = "fail_open"
    holds: HoldsConfig = HoldsConfig()
    """Holds of checks in flight, and where they are kept (see docs/check-api.md#holds)."""


class GlobalConfig(GlobalTuning):
    model_config = ConfigDict(extra="forbid", frozen=True)

    poll_interval: Duration = timedelta(hours=1)
    timeout: Timeout = timedelta(seconds=30)
    warning_ratio: Ratio = 0.8
    stop_ratio: Ratio = 0.95
    retries: int = Field(default=3, ge=0, le=10)
    retry_backoff: Duration = timedelta(seconds=1)
    max_retry_after: Duration = timedelta(minutes=5)
    jitter_ratio: float = Field(default=0.1, ge=0, le=0.5)
    max_series_per_source: int = Field(default=200, ge=1)
    poll_workers: int = Field(default=8, ge=1, le=256)
    check: CheckConfig = CheckConfig()
    dashboard_url: str | None = Field(default=None, max_length=2000)
    """Link to the Grafana dashboards, shown on the landing page."""
    fiscal_year_start: Month | None = None
    """The month quarterly and yearly budgets start their year in (unset: January)."""
    week_start: Weekday | None = None
    """The day weekly budgets start on (unset: Monday, ISO weeks)."""

    @model_validator(mode="before")
    @classmethod
    def _no_timezone(cls, data: Any) -> Any:
        return _refuse_timezone(data)

    @field_validator("dashboard_url")
    @classmethod
    def _plain_web_link(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc or re.search(r"\s", value):
            raise ValueError("must be an http:// or https:// URL")
        if "@" in parts.netloc:
            raise ValueError("must not contain a user name or password: the page shows it")
        return value


class LimitFrom(BaseModel):
    """Take a budget's limit from a budget kept in the provider (AWS or GCP Budgets)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str
    budget: str = Field(min_length=1)
    thresholds: bool = True
    """Use the provider budget's notification thresholds where the config sets none."""


class BudgetConfig(BudgetTuning):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)
    limit: Money | None = None
    limit_from: LimitFrom | None = None
    currency: Currency
    period: Period = Period.MONTHLY
    """The period as given, ``custom`` for ``start``/``end``; :class:`Config` resolves
    ``fiscal_year_start`` and ``week_start`` into it (``quarterly-april``, ...)."""
    fiscal_year_start: Month | None = None
    week_start: Weekday | None = None
    start: date | None = None
    end: date | None = None
    """A custom period: its first and last day (both counted), UTC."""
    sources: tuple[str, ...] | None = None
    """Source names or ``"*"``; unset means all sources, or, with ``limit_from``,
    the provider budget's own actual and forecast spend."""
    match: dict[str, str] = Field(default_factory=dict)
    warning_ratio: Ratio | None = None
    stop_ratio: Ratio | None = None
    labels: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _custom_period(cls, data: Any) -> Any:
        data = _refuse_timezone(data)
        if not isinstance(data, dict):
            return data
        period = str(data.get("period", "")).strip().lower()
        if period == "custom" or (not period and ("start" in data or "end" in data)):
            start, end = data.get("start"), data.get("end")
            if start is None or end is None:
                raise ValueError("a custom period needs both start and end (YYYY-MM-DD)")
            try:
                first = start if isinstance(start, date) else date.fromisoformat(str(start))
                last = end if isinstance(end, date) else date.fromisoformat(str(end))
            except ValueError:
                raise ValueError("start and end must be dates (YYYY-MM-DD)") from None
            if last < first:
                raise ValueError(f"end ({last}) is before start ({first})")
            data = {**data, "period": f"{first.isoformat()}/{last.isoformat()}"}
        elif "start" in data or "end" in data:
            raise ValueError(
                f"start and end make a custom period: set period: custom, not {period}"
            )
        return data

    @model_validator(mode="after")
    def _period_settings(self) -> BudgetConfig:
        kind = self.period.kind
        if self.fiscal_year_start is not None:
            if kind not in ("quarterly", "yearly"):
                raise ValueError("fiscal_year_start applies to quarterly and yearly budgets only")
            if self.period.first_month not in (1, self.fiscal_year_start):
                raise ValueError(f"period {self.period} contradicts fiscal_year_start")
        if self.week_start is not None and kind != "weekly":
            raise ValueError("week_start applies to weekly budgets only")
        return self

    @field_validator("limit")
    @classmethod
    def _positive(cls, value: Decimal | None) -> Decimal | None:
        if value is not None and value <= 0:
            raise ValueError("must be greater than zero")
        if value is not None and value < _SMALLEST_LIMIT:
            raise ValueError(f"must be at least {_SMALLEST_LIMIT}")
        return value

    @field_validator("sources", mode="before")
    @classmethod
    def _one_name(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value  # sources: "*"

    @field_validator("sources")
    @classmethod
    def _non_empty(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None and not value:
            raise ValueError('must name at least one source, or "*" for all')
        return value

    @model_validator(mode="after")
    def _limit_or_limit_from(self) -> BudgetConfig:
        if (self.limit is None) == (self.limit_from is None):
            raise ValueError("set exactly one of limit or limit_from")
        return self

    @property
    def spend_from_provider(self) -> bool:
        """Spend comes from the provider budget itself, not from source lines."""
        return self.limit_from is not None and self.sources is None

    @field_validator("match")
    @classmethod
    def _valid_patterns(cls, value: dict[str, str]) -> dict[str, str]:
        for key, pattern in value.items():
            if len(pattern) >= 2 and pattern.startswith("/") and pattern.endswith("/"):
                try:
                    re.compile(pattern[1:-1])
                except re.error as exc:
                    raise ValueError(f"invalid regular expression for {key!r}: {exc}") from None
        return value

    @field_validator("labels")
    @classmethod
    def _valid_labels(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not _LABEL_NAME.match(key) or key.startswith("__"):
                raise ValueError(f"{key!r} is not a valid Prometheus label name")
            if key in _BUDGET_LABELS:
                raise ValueError(f"{key!r} is set by the exporter and cannot be a static label")
            if label_clash(key):
                raise ValueError(label_clash(key))
        return value


@dataclass(frozen=True)
class Config:
    """A validated configuration."""

    file: str
    global_: GlobalConfig
    sources: tuple[SourceConfig, ...]
    budgets: tuple[BudgetConfig, ...]
    secrets: frozenset[str] = field(default=frozenset(), repr=False, compare=False)

    def __post_init__(self) -> None:
        budgets = tuple(_resolve_period(b, self.global_) for b in self.budgets)
        object.__setattr__(self, "budgets", budgets)

    def provider_class(self, source: SourceConfig) -> type[Provider]:
        return get_provider(source.provider)

    def budget_sources(self, budget: BudgetConfig) -> list[SourceConfig]:
        """Sources whose spend lines the budget sums (``"*"``: all but rates sources)."""
        if budget.spend_from_provider:
            return []
        if budget.sources is None or "*" in budget.sources:
            return [s for s in self.sources if not self.supplies_rates(s)]
        order = self._source_order
        found = sorted({order[name] for name in budget.sources if name in order})
        return [self.sources[i] for i in found]  # in config order, each once

    def polled_sources(self, budget: BudgetConfig) -> list[SourceConfig]:
        """Sources the budget needs data from: its spend sources and its limit source."""
        found = self.budget_sources(budget)
        ref = budget.limit_from
        if ref is None or ref.source not in self._source_order:
            return found
        if all(s.name != ref.source for s in found):
            found.append(self.sources[self._source_order[ref.source]])
        return found

    def supplies_rates(self, source: SourceConfig) -> bool:
        """A rates source (``ecb_rates``, ...): it reports exchange rates, not spend."""
        return bool(getattr(self.provider_class(source), "supplies_rates", False))

    @cached_property
    def rate_sources(self) -> tuple[SourceConfig, ...]:
        """The rates sources, in config order (the earlier wins a tie, docs/currencies.md)."""
        return tuple(s for s in self.sources if self.supplies_rates(s))

    def source_named(self, name: str) -> SourceConfig | None:
        """The source called ``name`` (looked up, not scanned)."""
        index = self._source_order.get(name)
        return None if index is None else self.sources[index]

    def source_budgets(self, source: str) -> tuple[BudgetConfig, ...]:
        """Budgets that sum ``source``'s spend lines, in config order (looked up, not scanned)."""
        return self._source_budgets.get(source, ())

    def limit_budgets(self, source: str) -> tuple[BudgetConfig, ...]:
        """Budgets that take their limit from ``source`` (``limit_from``)."""
        return self._limit_budgets.get(source, ())

    @cached_property
    def _source_order(self) -> dict[str, int]:
        return {s.name: i for i, s in enumerate(self.sources)}

    @cached_property
    def _source_budgets(self) -> dict[str, tuple[BudgetConfig, ...]]:
        found: dict[str, list[BudgetConfig]] = {}
        for budget in self.budgets:
            for source in self.budget_sources(budget):
                found.setdefault(source.name, []).append(budget)
        return {name: tuple(budgets) for name, budgets in found.items()}

    @cached_property
    def _limit_budgets(self) -> dict[str, tuple[BudgetConfig, ...]]:
        found: dict[str, list[BudgetConfig]] = {}
        for budget in self.budgets:
            if budget.limit_from is not None:
                found.setdefault(budget.limit_from.source, []).append(budget)
        return {name: tuple(budgets) for name, budgets in found.items()}

    def poll_interval(self, source: SourceConfig) -> timedelta:
        """Source setting, else the provider's default, else the global one."""
        return (
            source.poll_interval
            or self.provider_class(source).default_poll_interval
            or self.global_.poll_interval
        )

    def timeout(self, source: SourceConfig) -> timedelta:
        return source.timeout or self.global_.timeout

    def max_data_age(self, source: SourceConfig) -> timedelta:
        """How old ``source``'s figures may be before a budget counting them is stale.

        The source's own ``max_data_age`` when set.  Otherwise, for a billed source,
        ``global.check.max_data_age``, or twice its poll interval and at least six
        hours (a bill polled every 8h is not stale between two polls).  A metered
        source (``prometheus``) is current to its last poll, and a meter that stops
        answering must stop the budget soon, not hours later: three of its poll
        intervals plus its timeout, or ``global.check.max_data_age`` if shorter.
        """
        if source.max_data_age is not None:
            return source.max_data_age
        interval = self.poll_interval(source)
        everywhere = self.global_.check.max_data_age
        if self.provider_class(source).metered:
            own = METERED_POLLS_BEFORE_STALE * interval + self.timeout(source)
            return own if everywhere is None else min(own, everywhere)
        return everywhere or max(MIN_BILLED_DATA_AGE, 2 * interval)

    def periods(self, source: SourceConfig) -> frozenset[Period]:
        """The periods this source is polled for: its budgets' and, if it can, monthly
        (a metered source: monthly only when a budget needs it, or none uses it)."""
        return self._periods[source.name]

    @cached_property
    def _periods(self) -> dict[str, frozenset[Period]]:
        wanted: dict[str, set[Period]] = {
            s.name: set() if self.provider_class(s).metered else {Period.MONTHLY}
            for s in self.sources
        }
        for budget in self.budgets:
            for source in self.polled_sources(budget):
                wanted[source.name].add(budget.period)
        for periods in wanted.values():
            if not periods:  # a meter no budget counts: its monthly figures, for dashboards
                periods.add(Period.MONTHLY)
        found: dict[str, frozenset[Period]] = {}
        for s in self.sources:
            supported = self.provider_class(s).periods_for(s)
            found[s.name] = frozenset(p for p in wanted[s.name] if supports(supported, p))
        return found

    def warning_ratio(self, budget: BudgetConfig) -> float:
        return budget.warning_ratio or self.global_.warning_ratio

    def stop_ratio(self, budget: BudgetConfig) -> float:
        return budget.stop_ratio or self.global_.stop_ratio

    def alert_tuning(self, budget: BudgetConfig) -> AlertTuning:
        """The budget's settings for the spend-rate alerts (``tuning``)."""
        return resolve(self.global_, budget)


def _resolve_period(budget: BudgetConfig, global_: GlobalConfig) -> BudgetConfig:
    """``budget`` with its (or the global) fiscal year start and week start in its period."""
    period = budget.period
    if period.kind in ("quarterly", "yearly") and period.first_month == 1:
        month = budget.fiscal_year_start or global_.fiscal_year_start or 1
        period = Period.of(period.kind, first_month=month)
    elif period.kind == "weekly" and period.first_weekday == 0:
        day = budget.week_start or global_.week_start or 1
        period = Period.of("weekly", first_weekday=day - 1)
    if period == budget.period:
        return budget
    return budget.model_copy(update={"period": period})
