"""``aws_cost_explorer``: period-to-date AWS spend and AWS's forecast from Cost Explorer.

Reads ``GetCostAndUsage`` (one query for every period asked, every page) and, on its own
interval, ``GetCostForecast``.  Emits::

    budget_source_cost_amount{period, currency, service_name, sub_account_id,
        sub_account_name, region_id, tag_<key>, x_cost_category_<name>}   per group_by
    budget_source_data_through_timestamp_seconds                  today 00:00 UTC - settle_lag
    budget_source_cost_estimated                                  1 if AWS marks it Estimated
    budget_source_forecast_available{period}                      with forecast: true

plus AWS's forecast for budgets.  Time range, settle_lag and what it costs:
docs/providers-aws.md#aws_cost_explorer.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from budget_exporter.core.errors import SourceError
from budget_exporter.core.fields import Duration
from budget_exporter.core.model import Forecast, Period, PollResult, Sample, SpendLine, Window
from budget_exporter.core.money import parse_amount
from budget_exporter.core.periods import month_aligned, supports
from budget_exporter.providers import register
from budget_exporter.providers._aws import (
    AwsSession,
    AwsSourceConfig,
    aws_errors,
    boto3_installed,
    describe_error,
    is_credential_error,
)
from budget_exporter.providers.base import Provider

log = logging.getLogger(__name__)

Metric = Literal["UnblendedCost", "AmortizedCost", "NetUnblendedCost", "NetAmortizedCost"]
FORECAST_METRICS: dict[str, str] = {
    "UnblendedCost": "UNBLENDED_COST",
    "AmortizedCost": "AMORTIZED_COST",
    "NetUnblendedCost": "NET_UNBLENDED_COST",
    "NetAmortizedCost": "NET_AMORTIZED_COST",
}
DEFAULT_LABELS = {
    "SERVICE": "service_name",
    "LINKED_ACCOUNT": "sub_account_id",
    "REGION": "region_id",
}
ACCOUNT_NAME_LABEL = "sub_account_name"
_LABEL = re.compile(r"^[a-z_][a-z0-9_]*$")
_UNUSABLE_LABELS = frozenset(
    {"source", "provider", "currency", "service", "region", "instance", "job", "cluster", "env"}
)
_SUPPORTED = frozenset({Period.MONTHLY, Period.QUARTERLY, Period.YEARLY, Period.ANY})
"""Any window of whole days but a daily one: the query ends before today (its costs are
still arriving), so today's window would always be empty."""
ESTIMATED = "budget_source_cost_estimated"
ESTIMATED_HELP = (
    "1 if the provider marks the current month's spend as estimated (not yet final), else 0."
)


def _label_for(text: str) -> str:
    return re.sub(r"[^a-z0-9_]", "_", text.lower())


class GroupBy(BaseModel):
    """One Cost Explorer grouping and the label its values go to.

    Written as ``SERVICE``, ``LINKED_ACCOUNT``, ``REGION``, ``TAG:<key>``,
    ``COST_CATEGORY:<name>``, or as a mapping ``{type, key, label}``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["DIMENSION", "TAG", "COST_CATEGORY"]
    key: str = Field(min_length=1, max_length=1024)
    label: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        if isinstance(value, str):
            kind, sep, key = value.partition(":")
            if not sep:
                return {"type": "DIMENSION", "key": value.strip().upper()}
            kind = kind.strip().upper().replace("-", "_")
            return {"type": kind, "key": key.strip()}
        if isinstance(value, dict) and isinstance(value.get("type"), str):
            value = {**value, "type": value["type"].upper().replace("-", "_")}
            if value["type"] == "DIMENSION" and isinstance(value.get("key"), str):
                value["key"] = value["key"].upper()
        return value

    @model_validator(mode="after")
    def _usable_label(self) -> GroupBy:
        if self.type == "DIMENSION" and self.label is None and self.key not in DEFAULT_LABELS:
            raise ValueError(
                f"dimension {self.key} needs a label (only {', '.join(DEFAULT_LABELS)} have defaults)"
            )
        name = self.dimension
        if not _LABEL.match(name) or name in _UNUSABLE_LABELS:
            raise ValueError(f"{name!r} is not a usable label name")
        return self

    @property
    def dimension(self) -> str:
        """The FOCUS-style label this grouping's values are exported under."""
        if self.label is not None:
            return self.label
        if self.type == "DIMENSION":
            return DEFAULT_LABELS[self.key]
        if self.type == "TAG":
            return "tag_" + _label_for(self.key)
        return "x_cost_category_" + _label_for(self.key)

    def request(self) -> dict[str, str]:
        return {"Type": self.type, "Key": self.key}

    def value(self, key: str) -> str:
        """A group key as AWS sends it (``Key$Value`` for tags and cost categories)."""
        if self.type == "DIMENSION":
            return key
        prefix = f"{self.key}$"
        if key.startswith(prefix):
            return key[len(prefix) :]
        return key.split("$", 1)[1] if "$" in key else key


def filter_problems(expression: dict[str, Any]) -> str:
    """What botocore's model of ``Expression`` finds wrong with ``expression`` ("" if fine)."""
    if not boto3_installed():
        return ""  # AwsSourceConfig reports the missing extra
    import botocore.session
    from botocore.validate import ParamValidator

    model = botocore.session.get_session().get_service_model("ce")
    shape = model.operation_model("GetCostAndUsage").input_shape.members["Filter"]
    report = ParamValidator().validate(expression, shape)
    if not report.has_errors():
        return ""
    return "; ".join(line.strip() for line in report.generate_report().splitlines() if line.strip())


class CostExplorerConfig(AwsSourceConfig):
    metric: Metric = "UnblendedCost"
    group_by: tuple[GroupBy, ...] = Field(default=("SERVICE",), max_length=2, validate_default=True)
    filter: dict[str, Any] | None = None
    """A Cost Explorer ``Expression`` (``Dimensions``/``Tags``/``CostCategories``/``And``/…)."""
    include_credits: bool = True
    include_refunds: bool = True
    forecast: bool = True
    forecast_interval: Duration = timedelta(hours=24)
    max_pages: int = Field(default=10, ge=1, le=1000)
    """Stop (and fail the poll) after this many pages: each page is a billed request."""
    settle_lag: Duration | None = None
    """Whole days before today whose costs are still arriving (Cost Explorer lags up to
    a day): the data horizon moves back by that much and their costs are reported as
    unsettled, so a meter joined with ``metered_after`` counts those days instead."""

    @model_validator(mode="after")
    def _consistent(self) -> CostExplorerConfig:
        labels = [g.dimension for g in self.group_by]
        if len(set(labels)) != len(labels):
            raise ValueError("group_by entries must map to different labels")
        if self.filter is not None:
            if not self.filter:
                raise ValueError("filter must be a non-empty Cost Explorer expression")
            problems = filter_problems(self.filter)
            if problems:
                raise ValueError(f"filter is not a valid Cost Explorer expression: {problems}")
        if self.forecast_interval < timedelta(hours=1):
            raise ValueError("forecast_interval must be at least 1h (each forecast is billed)")
        if self.settle_lag is not None and (
            self.settle_lag % timedelta(days=1) or not timedelta(days=1) <= self.settle_lag
            or self.settle_lag > timedelta(days=7)
        ):  # fmt: skip
            raise ValueError("settle_lag must be whole days, from 1d to 7d")
        return self

    def request_filter(self) -> dict[str, Any] | None:
        """The user's filter, with credits/refunds left out when asked."""
        excluded = [
            kind
            for kind, include in (
                ("Credit", self.include_credits),
                ("Refund", self.include_refunds),
            )
            if not include
        ]
        parts: list[dict[str, Any]] = [self.filter] if self.filter else []
        if excluded:
            parts.append({"Not": {"Dimensions": {"Key": "RECORD_TYPE", "Values": excluded}}})
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else {"And": parts}


@dataclass
class CostData:
    """What the pages of one ``GetCostAndUsage`` query said, merged."""

    amounts: dict[tuple[date, tuple[str, ...], str], Decimal] = field(
        default_factory=lambda: defaultdict(Decimal)
    )
    """(period start, group keys, currency) -> amount."""
    estimated: dict[date, bool] = field(default_factory=dict)
    """Period start -> whether AWS marked it Estimated (not final)."""
    attributes: dict[str, dict[str, str]] = field(default_factory=dict)
    """DimensionValueAttributes: value -> attributes (account names for LINKED_ACCOUNT)."""


def parse_pages(pages: Iterable[Mapping[str, Any]], metric: str, groups: int) -> CostData:
    """Merge ``GetCostAndUsage`` answers; amounts stay Decimal."""
    data = CostData()
    for page in pages:
        for item in page.get("DimensionValueAttributes") or []:
            if isinstance(item, Mapping) and item.get("Value") is not None:
                attrs = item.get("Attributes") or {}
                data.attributes[str(item["Value"])] = {str(k): str(v) for k, v in attrs.items()}
        for index, result in enumerate(page.get("ResultsByTime") or []):
            where = f"ResultsByTime[{index}]"
            try:
                start = date.fromisoformat(result["TimePeriod"]["Start"][:10])
            except (KeyError, TypeError, ValueError):
                raise SourceError(f"{where}.TimePeriod.Start is missing or not a date") from None
            data.estimated[start] = data.estimated.get(start, False) or bool(
                result.get("Estimated", False)
            )
            if groups:
                for pos, group in enumerate(result.get("Groups") or []):
                    keys = tuple(str(k) for k in group.get("Keys") or [])
                    if len(keys) != groups:
                        raise SourceError(
                            f"{where}.Groups[{pos}] has {len(keys)} keys, expected {groups}"
                        )
                    _add(data, start, keys, (group.get("Metrics") or {}).get(metric), where)
            else:
                _add(data, start, (), (result.get("Total") or {}).get(metric), where)
    return data


def _add(data: CostData, start: date, keys: tuple[str, ...], value: Any, where: str) -> None:
    if value is None:
        return  # no figure for this metric in this period: nothing spent
    if not isinstance(value, Mapping):
        raise SourceError(f"{where}: metric value is not an object")
    amount = parse_amount(value.get("Amount"), f"{where} Amount")
    unit = str(value.get("Unit") or "").strip().upper()
    if not re.fullmatch(r"[A-Z]{3}", unit):
        raise SourceError(f"{where}: Unit is not a 3-letter currency code")
    data.amounts[(start, keys, unit)] += amount


def query_ranges(windows: Sequence[Window], today: date) -> list[tuple[date, date]]:
    """The ``GetCostAndUsage`` range answering each window: windows of whole months share
    one (its MONTHLY results start on the 1st, so each window picks its months); any
    other window (a week, a custom range) has its own, its days only, up to today."""
    aligned = [w.start.date() for w in windows if month_aligned(w)]
    shared = (min(aligned), today) if aligned else None
    ranges = []
    for window in windows:
        if month_aligned(window) and shared is not None:
            ranges.append(shared)
        else:
            ranges.append((window.start.date(), min(window.end.date(), today)))
    return ranges


@dataclass(frozen=True)
class _CachedForecast:
    window: Window
    fetched_at: datetime
    start: date
    rest: Decimal | None
    currency: str | None


@register
class CostExplorerProvider(Provider):
    name = "aws_cost_explorer"
    config_model = CostExplorerConfig
    default_poll_interval = timedelta(hours=8)
    # Cost Explorer is throttled per account and STS per caller: 2,000 role_arn sources
    # start over 400 s, not in the same second.
    max_polls_per_second = 5.0
    reports_horizon = True
    supported_periods = _SUPPORTED

    def __init__(self, config: CostExplorerConfig, context: Any) -> None:
        super().__init__(config, context)
        self.log = log.getChild(context.source)
        self.aws = AwsSession(config, context)
        self._forecasts: dict[Period, _CachedForecast] = {}

    def close(self) -> None:
        self.aws.close()

    # -- polling -------------------------------------------------------------------

    def poll(self, windows: Sequence[Window]) -> PollResult:
        config: CostExplorerConfig = self.config
        now = self.context.now()
        today = now.date()
        windows = [w for w in windows if supports(_SUPPORTED, w.period)]
        if not windows:
            return PollResult(polled_at=now)
        horizon = today - (config.settle_lag or timedelta(0))
        answers: dict[tuple[date, date], CostData] = {}
        lines: list[SpendLine] = []
        unsettled: list[SpendLine] = []
        samples: list[Sample] = []
        forecasts: list[Forecast] = []
        for window, query in zip(windows, query_ranges(windows, today), strict=True):
            first, end = query
            # The range, and the days in it still arriving (settle_lag), asked for once each.
            recent = query if horizon <= first else (horizon, end) if horizon < end else None
            with aws_errors(config.role_arn):
                for wanted in (query, recent):
                    if wanted is not None and wanted not in answers:
                        answers[wanted] = self.fetch_costs(*wanted)
            data = answers[query]
            unsettled_data = answers[recent] if recent is not None else CostData()
            spend = self.parse(data, unsettled_data, window, today)
            lines.extend(spend.lines)
            unsettled.extend(spend.unsettled)
            samples.extend(spend.samples)
            if config.forecast:
                forecast = self.forecast_for(window, spend.lines, now)
                if forecast is not None:
                    forecasts.append(forecast)
                samples.append(
                    Sample.of(
                        "budget_source_forecast_available",
                        "1 if the provider's own forecast is used for the period, 0 if budgets "
                        "fall back to a linear projection.",
                        1 if forecast is not None else 0,
                        {"period": str(window.period)},
                    )
                )
        return PollResult(
            lines=tuple(lines),
            unsettled=tuple(unsettled),
            forecasts=tuple(forecasts),
            samples=tuple(samples),
            polled_at=now,
            # The query's exclusive End: today, 00:00 UTC (today's costs are left out),
            # less settle_lag: the days before it are still arriving.
            data_through=datetime.combine(horizon, time(), UTC),
        )

    def cost_request(self, start: date, end: date) -> dict[str, Any]:
        config: CostExplorerConfig = self.config
        request: dict[str, Any] = {
            "TimePeriod": {"Start": start.isoformat(), "End": end.isoformat()},
            "Granularity": "MONTHLY",
            "Metrics": [config.metric],
        }
        if config.group_by:
            request["GroupBy"] = [g.request() for g in config.group_by]
        expression = config.request_filter()
        if expression is not None:
            request["Filter"] = expression
        return request

    def fetch_costs(self, start: date, today: date) -> CostData:
        """Every page of spend from ``start`` up to ``today`` (exclusive; or the end of a
        window already over)."""
        config: CostExplorerConfig = self.config
        if start >= today:
            return CostData()  # first day of the period: the range is empty, nothing to ask
        request = self.cost_request(start, today)
        client = self.aws.client("ce")
        pages: list[dict[str, Any]] = []
        token: str | None = None
        for _ in range(config.max_pages):
            page = client.get_cost_and_usage(
                **request, **({"NextPageToken": token} if token else {})
            )
            pages.append(page)
            token = page.get("NextPageToken") or None
            if token is None:
                return parse_pages(pages, config.metric, len(config.group_by))
        raise SourceError(
            f"Cost Explorer answered more than max_pages ({config.max_pages}) pages; "
            "each page is billed: narrow group_by or filter, or raise max_pages"
        )

    def parse(self, data: CostData, unsettled: CostData, window: Window, today: date) -> PollResult:
        """The spend of ``window`` in the merged answers: its lines, the part of them not
        settled yet (from the query of the days still arriving) and, for the month,
        whether AWS marks the figures as estimated."""
        samples: tuple[Sample, ...] = ()
        if window.period == Period.MONTHLY:
            flags = [v for d, v in data.estimated.items() if d >= window.start.date()]
            if flags:
                samples = (Sample.of(ESTIMATED, ESTIMATED_HELP, 1 if any(flags) else 0),)
        return PollResult(
            lines=self.lines_for(data, window, today),
            unsettled=self.lines_for(unsettled, window, today),
            samples=samples,
        )

    def lines_for(self, data: CostData, window: Window, today: date) -> tuple[SpendLine, ...]:
        config: CostExplorerConfig = self.config
        first, last = window.start.date(), min(window.end.date(), today)
        sums: dict[tuple[tuple[str, ...], str], Decimal] = defaultdict(Decimal)
        for (start, keys, unit), amount in data.amounts.items():
            if first <= start < last:
                sums[(keys, unit)] += amount
        lines = []
        for (keys, unit), amount in sorted(sums.items()):
            dims: dict[str, str] = {}
            for group, key in zip(config.group_by, keys, strict=True):
                dims[group.dimension] = group.value(key)
                if group.type == "DIMENSION" and group.key == "LINKED_ACCOUNT":
                    name = data.attributes.get(key, {}).get("description")
                    if name:
                        dims[ACCOUNT_NAME_LABEL] = name
            lines.append(SpendLine.of(window.period, amount, unit, dims))
        return tuple(lines)

    # -- forecast ------------------------------------------------------------------

    def forecast_for(
        self, window: Window, lines: Sequence[SpendLine], now: datetime
    ) -> Forecast | None:
        """Spend so far plus AWS's forecast for the rest of the window, if available."""
        config: CostExplorerConfig = self.config
        today = now.date()
        if not window.start.date() <= today < window.end.date():
            return None  # a custom range not begun or over: nothing to forecast
        cached = self._forecasts.get(window.period)
        if (
            cached is None
            or cached.window != window
            or now - cached.fetched_at >= config.forecast_interval
        ):
            fetched = self.fetch_forecast(window, now)
            if fetched is None:
                return None  # failed: try again next poll
            cached = self._forecasts[window.period] = fetched
        if cached.rest is None or cached.currency is None:
            return None
        end = window.end.date()
        rest = cached.rest
        if cached.start < today:
            rest = rest * Decimal((end - today).days) / Decimal((end - cached.start).days)
        spent = sum((ln.amount for ln in lines if ln.currency == cached.currency), Decimal(0))
        return Forecast(window.period, spent + rest, cached.currency)

    def _forecast_client(self) -> Any:
        return self.aws.client("ce")

    def fetch_forecast(self, window: Window, now: datetime) -> _CachedForecast | None:
        """Ask AWS for today..end of ``window``; None when the call failed."""
        config: CostExplorerConfig = self.config
        from botocore.exceptions import BotoCoreError, ClientError

        today = now.date()
        request: dict[str, Any] = {
            "TimePeriod": {"Start": today.isoformat(), "End": window.end.date().isoformat()},
            "Metric": FORECAST_METRICS[config.metric],
            "Granularity": "MONTHLY",
        }
        expression = config.request_filter()
        if expression is not None:
            request["Filter"] = expression
        try:
            answer = self._forecast_client().get_cost_forecast(**request)
        except (ClientError, BotoCoreError) as exc:
            if is_credential_error(exc):
                # Not a forecast problem: the source cannot authenticate (on the first day
                # of a period this is its only request).
                raise SourceError(describe_error(exc, config.role_arn) or str(exc)) from None
            code = (
                exc.response.get("Error", {}).get("Code") if isinstance(exc, ClientError) else None
            )
            if code == "DataUnavailableException":
                self.log.info(
                    "Cost Explorer has no forecast for the %s period yet (not enough history); "
                    "budgets use a linear projection",
                    window.period,
                )
                return _CachedForecast(window, now, today, None, None)
            self._forecast_failed(exc)
            return None
        total = answer.get("Total") or {}
        try:
            rest = parse_amount(total.get("Amount"), "GetCostForecast Total.Amount")
        except SourceError as exc:
            self.log.warning("forecast ignored: %s", exc)
            return None
        unit = str(total.get("Unit") or "").strip().upper()
        if not re.fullmatch(r"[A-Z]{3}", unit):
            self.log.warning("forecast ignored: Total.Unit is not a currency code")
            return None
        return _CachedForecast(window, now, today, max(rest, Decimal(0)), unit)

    def _forecast_failed(self, exc: BaseException) -> None:
        message = describe_error(exc, self.config.role_arn) or type(exc).__name__
        self.log.warning("forecast unavailable, budgets use a linear projection: %s", message)
