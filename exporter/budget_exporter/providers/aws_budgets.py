"""``aws_budgets``: the budgets kept in AWS Budgets, as limits for budget-exporter budgets.

Reads ``DescribeBudgets`` (every page) and, per budget, ``DescribeNotificationsForBudget``.
Emits no series of its own: each COST budget (daily, monthly, quarterly or annual from its
start month, or custom days) becomes a provider budget (limit, AWS's actual and forecast
spend, warning and stop ratios) that a budget takes with ``limit_from``.  Which budgets and thresholds count: docs/providers-aws.md#aws_budgets.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from pydantic import Field

from budget_exporter.core.errors import SourceError
from budget_exporter.core.model import Period, PollResult, ProviderBudget, Window
from budget_exporter.core.money import AmountError, parse_amount, read_amount
from budget_exporter.core.periods import window_at
from budget_exporter.providers import register
from budget_exporter.providers._aws import AwsSession, AwsSourceConfig, aws_errors
from budget_exporter.providers.base import Provider

log = logging.getLogger(__name__)

TIME_UNITS = {
    "DAILY": Period.DAILY,
    "MONTHLY": Period.MONTHLY,
    "QUARTERLY": Period.QUARTERLY,
    "ANNUALLY": Period.YEARLY,
}
"""Each time unit's period; a quarterly or annual budget starts its year in the month of
its ``TimePeriod.Start`` (an annual budget from April runs April to March), and a CUSTOM
budget covers the days from its start to its end."""
PAGE_SIZE = 100


class BudgetsConfig(AwsSourceConfig):
    account_id: str | None = Field(default=None, pattern=r"^\d{12}$")
    """The account that owns the budgets; default: the credentials' own account."""
    budget_names: tuple[str, ...] | None = Field(default=None, min_length=1)
    """Import only these budgets (default: every COST budget)."""
    notifications: bool = True
    """Read each budget's notification thresholds (one request per budget)."""
    max_pages: int = Field(default=20, ge=1, le=1000)


def threshold_ratios(
    notifications: Iterable[Mapping[str, Any]],
) -> tuple[float | None, float | None]:
    """Warning and stop ratios from a budget's notifications.

    Only alerts on ACTUAL spend with a PERCENTAGE threshold above 0 and below
    100 % count (100 % is already the ``exceeded`` state, as for GCP budgets):
    the lowest becomes the warning ratio and, when there are at least two, the
    highest becomes the stop ratio.
    """
    ratios: set[float] = set()
    for item in notifications:
        if item.get("NotificationType") != "ACTUAL":
            continue
        if item.get("ThresholdType", "PERCENTAGE") != "PERCENTAGE":
            continue
        if item.get("ComparisonOperator", "GREATER_THAN") not in ("GREATER_THAN", "EQUAL_TO"):
            continue
        try:
            percent = read_amount(item.get("Threshold"))
        except AmountError:
            continue
        if 0 < percent < 100:
            ratios.add(float(percent / 100))
    if not ratios:
        return None, None
    ordered = sorted(ratios)
    return ordered[0], (ordered[-1] if len(ordered) > 1 else None)


def _amount(node: Any, what: str) -> tuple[Decimal, str] | None:
    if not isinstance(node, Mapping) or node.get("Amount") is None:
        return None
    unit = str(node.get("Unit") or "").strip().upper()
    if len(unit) != 3 or not unit.isalpha():
        raise SourceError(f"{what}.Unit is not a 3-letter currency code")
    return parse_amount(node["Amount"], f"{what}.Amount"), unit


def _epoch(value: Any) -> float | None:
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, int | float):
        return float(value)
    return None


def budget_period(unit: str, start: float | None, end: float | None) -> Period | None:
    """The period of a budget with time unit ``unit`` and ``TimePeriod`` ``start``/``end``
    (Unix times), or None when it has none."""
    first = None if start is None else datetime.fromtimestamp(start, UTC)
    if unit == "CUSTOM":
        if first is None or end is None:
            return None
        # End is exclusive at midnight (AWS shows 00:00 of the next day); else its day counts.
        last = datetime.fromtimestamp(end, UTC) - timedelta(microseconds=1)
        return Period.of("custom", first_day=first.date(), last_day=max(last.date(), first.date()))
    period = TIME_UNITS.get(unit)
    if period is not None and first is not None and unit in ("QUARTERLY", "ANNUALLY"):
        return Period.of(period.kind, first_month=first.month)
    return period


def parse_budget(budget: Mapping[str, Any], now: datetime) -> ProviderBudget | str:
    """A ProviderBudget, or the reason the budget cannot be one."""
    name = str(budget.get("BudgetName") or "")
    where = f"budget {name!r}"
    if budget.get("BudgetType") != "COST":
        return f"{where} is a {budget.get('BudgetType')} budget, not COST"
    time_period = budget.get("TimePeriod") or {}
    end = _epoch(time_period.get("End"))
    if end is not None and end <= now.timestamp():
        return f"{where} has ended"
    period = budget_period(str(budget.get("TimeUnit")), _epoch(time_period.get("Start")), end)
    if period is None:
        return f"{where} has time unit {budget.get('TimeUnit')}, without the dates it needs"
    window: Window = window_at(period, now)
    limit = _amount(budget.get("BudgetLimit"), f"{where} BudgetLimit")
    if limit is None:
        planned = budget.get("PlannedBudgetLimits") or {}
        key = str(int(window.start.timestamp()))
        limit = _amount(planned.get(key), f"{where} PlannedBudgetLimits[{key}]")
        if limit is None:
            return f"{where} has no limit for the current period"
    amount, currency = limit
    spend = budget.get("CalculatedSpend") or {}
    actual = _amount(spend.get("ActualSpend"), f"{where} ActualSpend")
    forecast = _amount(spend.get("ForecastedSpend"), f"{where} ForecastedSpend")
    return ProviderBudget(
        key=name,
        period=period,
        limit=amount,
        currency=currency,
        actual=actual[0] if actual and actual[1] == currency else None,
        forecast=forecast[0] if forecast and forecast[1] == currency else None,
    )


@register
class BudgetsProvider(Provider):
    name = "aws_budgets"
    config_model = BudgetsConfig
    default_poll_interval = timedelta(hours=1)
    max_polls_per_second = 5.0
    # No spend lines, so any period is fine (a weekly budget over "*" sources must not be
    # refused because of this source); each provider budget carries its own period.

    def __init__(self, config: BudgetsConfig, context: Any) -> None:
        super().__init__(config, context)
        self.log = log.getChild(context.source)
        self.aws = AwsSession(config, context)
        self._account_id: str | None = config.account_id

    def close(self) -> None:
        self.aws.close()

    def poll(self, windows: Sequence[Window]) -> PollResult:
        config: BudgetsConfig = self.config
        now = self.context.now().astimezone(UTC)
        with aws_errors(config.role_arn):
            account = self.account_id()
            found: list[ProviderBudget] = []
            for raw in self.describe_budgets(account):
                name = str(raw.get("BudgetName") or "")
                if config.budget_names is not None and name not in config.budget_names:
                    continue
                parsed = parse_budget(raw, now)
                if isinstance(parsed, str):
                    self.log.debug("skipped: %s", parsed)
                    continue
                if config.notifications:
                    warning, stop = threshold_ratios(self.notifications(account, name))
                    parsed = ProviderBudget(
                        key=parsed.key,
                        period=parsed.period,
                        limit=parsed.limit,
                        currency=parsed.currency,
                        actual=parsed.actual,
                        forecast=parsed.forecast,
                        warning_ratio=warning,
                        stop_ratio=stop,
                    )
                found.append(parsed)
        return PollResult(budgets=tuple(found), polled_at=now)

    def account_id(self) -> str:
        if self._account_id is None:
            identity = self.aws.client("sts").get_caller_identity()
            self._account_id = str(identity["Account"])
        return self._account_id

    def describe_budgets(self, account: str) -> list[dict[str, Any]]:
        """Every page of DescribeBudgets."""
        return self._all_pages(
            "DescribeBudgets", "Budgets", {"AccountId": account, "MaxResults": PAGE_SIZE}
        )

    def notifications(self, account: str, budget: str) -> list[dict[str, Any]]:
        from botocore.exceptions import ClientError

        try:
            return self._all_pages(
                "DescribeNotificationsForBudget",
                "Notifications",
                {"AccountId": account, "BudgetName": budget, "MaxResults": PAGE_SIZE},
            )
        except ClientError as exc:
            # A budget deleted between the two calls has no notifications.
            if (exc.response.get("Error") or {}).get("Code") == "NotFoundException":
                return []
            raise

    def _all_pages(self, operation: str, key: str, request: dict[str, Any]) -> list[dict[str, Any]]:
        client = self.aws.client("budgets")
        call = getattr(client, _snake(operation))
        items: list[dict[str, Any]] = []
        token: str | None = None
        for _ in range(self.config.max_pages):
            page = call(**request, **({"NextToken": token} if token else {}))
            items.extend(page.get(key) or [])
            token = page.get("NextToken") or None
            if token is None:
                return items
        raise SourceError(
            f"{operation} answered more than max_pages ({self.config.max_pages}) pages"
        )


def _snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")
