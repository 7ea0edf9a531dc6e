"""Value types shared by providers, the poller and the snapshot: spend lines, windows,
poll results.  Amounts are :class:`~decimal.Decimal`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, ClassVar

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

RequestStatus = str
"""One of ``ok``, ``client_error``, ``server_error``, ``throttled``, ``timeout``, ``network``."""
REQUEST_STATUSES = ("ok", "client_error", "server_error", "throttled", "timeout", "network")
"""Every outcome of a request to a provider's API, as counted by
``budget_source_api_requests_total``."""


def label_clash(name: str) -> str | None:
    """Why ``name`` cannot be a dimension or budget label, or None if it can."""
    if name not in TARGET_LABELS:
        return None
    better = FOCUS_NAMES.get(name, f"exported_{name}")
    return f"label {name!r} clashes with Prometheus target labels; use {better!r}"


MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august",
          "september", "october", "november", "december")  # fmt: skip
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_KINDS = ("daily", "weekly", "monthly", "quarterly", "yearly")
_RANGE = re.compile(r"^(\d{4}-\d{2}-\d{2})/(\d{4}-\d{2}-\d{2})$")
_INTERNED: dict[str, Period] = {}


class _PeriodType(type):
    def __iter__(cls) -> Iterator[Period]:
        """The plain calendar periods, then :attr:`Period.ANY` (see ``supported_periods``)."""
        return iter((*(Period(kind) for kind in _KINDS), Period.ANY))


class Period(str, metaclass=_PeriodType):
    """A budget period, in UTC; its text is its name (the ``period`` label).

    ``daily``, ``monthly``; ``weekly`` (ISO weeks, from Monday) or ``weekly-sunday``
    (weeks from another day); ``quarterly`` and ``yearly`` (calendar) or
    ``yearly-april``, ``quarterly-february`` (fiscal, from another month; a quarter from
    April, July or October is a calendar quarter, ``quarterly``); or a custom range
    ``2026-04-01/2026-09-30`` (both days included).  Equal texts are the same object.
    """

    __slots__ = ()

    DAILY: ClassVar[Period]
    WEEKLY: ClassVar[Period]
    MONTHLY: ClassVar[Period]
    QUARTERLY: ClassVar[Period]
    YEARLY: ClassVar[Period]
    ANY: ClassVar[Period]
    """Not a period: in a provider's ``supported_periods``, "any window of whole days"
    (it asks its API for any range of days: weekly, fiscal, custom); ``daily`` only
    where listed too (see :func:`budget_exporter.core.periods.supports`)."""

    def __new__(cls, value: str) -> Period:
        text = str(value).strip().lower()
        found = _INTERNED.get(text)
        if found is not None and found != "any":
            return found
        canonical = _canonical(text)
        found = _INTERNED.get(canonical)
        if found is None:
            found = _INTERNED[canonical] = super().__new__(cls, canonical)
        return found

    @classmethod
    def of(
        cls,
        kind: str,
        *,
        first_month: int = 1,
        first_weekday: int = 0,
        first_day: date | None = None,
        last_day: date | None = None,
    ) -> Period:
        """The period of ``kind`` (``custom`` with ``first_day`` and ``last_day``)."""
        if kind == "custom":
            if first_day is None or last_day is None:
                raise ValueError("a custom period needs a first and a last day")
            return cls(f"{first_day.isoformat()}/{last_day.isoformat()}")
        if kind == "weekly" and first_weekday:
            return cls(f"weekly-{WEEKDAYS[first_weekday]}")
        if kind in ("quarterly", "yearly") and first_month != 1:
            return cls(f"{kind}-{MONTHS[first_month - 1]}")
        return cls(kind)

    @property
    def kind(self) -> str:
        """``daily``, ``weekly``, ``monthly``, ``quarterly``, ``yearly`` or ``custom``."""
        return "custom" if "/" in self else self.split("-")[0]

    @property
    def first_month(self) -> int:
        """Quarterly and yearly: the month (1-12) a (fiscal) year starts in."""
        _, _, month = self.partition("-")
        return MONTHS.index(month) + 1 if month in MONTHS else 1

    @property
    def first_weekday(self) -> int:
        """Weekly: the day a week starts on, 0 (Monday) to 6 (Sunday)."""
        _, _, day = self.partition("-")
        return WEEKDAYS.index(day) if day in WEEKDAYS else 0

    @property
    def days(self) -> tuple[date, date] | None:
        """A custom range: its first and last day (both included); None otherwise."""
        if self.kind != "custom":
            return None
        first, _, last = self.partition("/")
        return date.fromisoformat(first), date.fromisoformat(last)

    @property
    def calendar(self) -> bool:
        """A plain UTC calendar period (a calendar quarter, year, ISO week, ...)."""
        return self in _KINDS

    def __repr__(self) -> str:
        return f"Period({str(self)!r})"

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return _period_named, (str(self),)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        from pydantic_core import core_schema

        return core_schema.no_info_after_validator_function(
            cls,
            core_schema.str_schema(),
            serialization=core_schema.to_string_ser_schema(),
        )


def _period_named(text: str) -> Period:
    """The period called ``text`` (:attr:`Period.ANY` too): copies and pickles stay one object."""
    return _INTERNED.get(text) or Period(text)


def _canonical(text: str) -> str:
    """``text`` as a period's canonical name; ValueError naming what is accepted."""
    if text in _KINDS:
        return text
    kind, _, rest = text.partition("-")
    if kind == "weekly" and rest in WEEKDAYS:
        return "weekly" if rest == "monday" else text
    if kind in ("quarterly", "yearly") and rest in MONTHS:
        month = MONTHS.index(rest)
        if kind == "quarterly":  # April, July and October start the calendar quarters too
            month %= 3
        return kind if month == 0 else f"{kind}-{MONTHS[month]}"
    match = _RANGE.match(text)
    if match:
        try:
            first, last = (date.fromisoformat(part) for part in match.groups())
        except ValueError:
            raise ValueError(f"{text!r} is not a range of two valid dates") from None
        if last < first:
            raise ValueError(f"{text!r} ends before it starts")
        return f"{first.isoformat()}/{last.isoformat()}"
    raise ValueError(
        f"unknown period {text!r}: use daily, weekly, monthly, quarterly or yearly "
        "(weekly-sunday, quarterly-april, ... for another first day or month) "
        "or a range of days YYYY-MM-DD/YYYY-MM-DD"
    )


Period.DAILY = Period("daily")
Period.WEEKLY = Period("weekly")
Period.MONTHLY = Period("monthly")
Period.QUARTERLY = Period("quarterly")
Period.YEARLY = Period("yearly")
Period.ANY = _INTERNED["any"] = str.__new__(Period, "any")


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
class Rate:
    """An exchange rate: one ``base`` is ``value`` ``quote``, as published for the day
    starting at ``day`` (midnight UTC; None: a fixed rate, never stale)."""

    base: str
    quote: str
    value: Decimal
    day: datetime | None = None


@dataclass(frozen=True, slots=True)
class FailedWindow:
    """A window whose query failed while the poll's other windows answered (a provider that
    asks for each window apart, such as ``prometheus``): the result has no lines, samples,
    forecasts or budgets of its period."""

    period: Period
    error: str
    """Why, in one line (as the error of a failed poll)."""
    last_success: float | None = None
    """Set by the engine on the result it keeps, not by providers: the start (Unix seconds)
    of the last poll that answered this window, whose figures of the period are kept; None
    when none are (the window's budgets have no data)."""


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
    rates: tuple[Rate, ...] = ()
    """Exchange rates (a rates source's result: it has no lines)."""
    failed_windows: tuple[FailedWindow, ...] = ()
    """The windows that failed alone: the poll answered for the others (at least one), and
    the engine keeps the failed windows' previous figures of the same window, judged by
    their own age (see docs/realtime.md, when the meter is wrong).  A provider whose every
    window fails raises SourceError instead."""
