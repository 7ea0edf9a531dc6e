"""aws_budgets against moto (budgets and notifications as AWS keeps them) and
botocore's Stubber (pages moto does not produce, error answers).  The Stubber's pages are
recorded in ``fixtures/`` as DescribeBudgets and DescribeNotificationsForBudget answer
(amounts as strings, thresholds as numbers, ``NextToken`` while more pages exist).

Fake credentials come from the environment and a socket guard refuses
anything but loopback, so no test can reach real AWS.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws
from moto.ce.models import ce_backends
from moto.core import DEFAULT_ACCOUNT_ID

from budget_exporter.config.loader import load_config
from budget_exporter.core.errors import ConfigError
from budget_exporter.core.model import Period, PollResult, ProviderBudget
from budget_exporter.core.periods import window_at
from budget_exporter.providers.aws_budgets import BudgetsProvider, parse_budget, threshold_ratios
from tests.support import aws
from tests.support.aws import offline_aws  # noqa: F401 (autouse fixture)
from tests.support.fixtures import load_fixture

NOW = datetime(2026, 8, 21, 12, 0, tzinfo=UTC)
OTHER_ACCOUNT = "111122223333"
# AWS starts a budget created without dates at the start of its period (1 January for an
# annual one); moto starts every budget on the 1st of the current month: give the dates.
CALENDAR = {"Start": datetime(2026, 1, 1, tzinfo=UTC), "End": datetime(2087, 6, 15, tzinfo=UTC)}

# -- helpers -------------------------------------------------------------------------


class Harness(aws.Harness):
    provider_class = BudgetsProvider
    source = "aws-budgets"

    def __init__(self, now: datetime = NOW, **settings: Any) -> None:
        super().__init__(now, retries=0, **settings)

    def poll(self) -> PollResult:
        return self.provider.poll([window_at(Period.MONTHLY, self.now)])


def money(amount: str) -> dict[str, str]:
    return {"Amount": amount, "Unit": "USD"}


def notification(threshold: float, kind: str = "ACTUAL", unit: str = "PERCENTAGE") -> dict:
    return {
        "Notification": {
            "NotificationType": kind,
            "ComparisonOperator": "GREATER_THAN",
            "Threshold": threshold,
            "ThresholdType": unit,
        },
        "Subscribers": [{"SubscriptionType": "EMAIL", "Address": "finops@example.com"}],
    }


def create_budget(
    name: str,
    *,
    account: str = DEFAULT_ACCOUNT_ID,
    limit: str | None = "1000",
    time_unit: str = "MONTHLY",
    budget_type: str = "COST",
    spend: dict[str, Any] | None = None,
    notifications: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> None:
    budget: dict[str, Any] = {
        "BudgetName": name,
        "TimeUnit": time_unit,
        "BudgetType": budget_type,
        **extra,
    }
    if limit is not None:
        budget["BudgetLimit"] = money(limit)
    if spend is not None:
        budget["CalculatedSpend"] = spend
    budgets_client(account).create_budget(
        AccountId=account, Budget=budget, NotificationsWithSubscribers=notifications or []
    )


def budgets_client(account: str) -> Any:
    """A Budgets client acting as ``account`` (moto keys its data by the caller)."""
    if account == DEFAULT_ACCOUNT_ID:
        return boto3.client("budgets", region_name="us-east-1")
    credentials = boto3.client("sts", region_name="us-east-1").assume_role(
        RoleArn=f"arn:aws:iam::{account}:role/admin", RoleSessionName="test-setup"
    )["Credentials"]
    return boto3.client(
        "budgets",
        region_name="us-east-1",
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
    )


def by_key(result: PollResult) -> dict[str, ProviderBudget]:
    return {b.key: b for b in result.budgets}


# -- thresholds and parsing ------------------------------------------------------------


def test_percentage_alerts_on_actual_spend_become_ratios() -> None:
    items = [
        {"NotificationType": "ACTUAL", "ComparisonOperator": "GREATER_THAN", "Threshold": 80.0,
         "ThresholdType": "PERCENTAGE", "NotificationState": "OK"},
        {"NotificationType": "ACTUAL", "ComparisonOperator": "GREATER_THAN", "Threshold": 95.0,
         "ThresholdType": "PERCENTAGE", "NotificationState": "ALARM"},
        {"NotificationType": "FORECASTED", "ComparisonOperator": "GREATER_THAN",
         "Threshold": 50.0, "ThresholdType": "PERCENTAGE"},
        {"NotificationType": "ACTUAL", "ComparisonOperator": "GREATER_THAN", "Threshold": 300.0,
         "ThresholdType": "ABSOLUTE_VALUE"},
        {"NotificationType": "ACTUAL", "ComparisonOperator": "GREATER_THAN", "Threshold": 120.0,
         "ThresholdType": "PERCENTAGE"},
        {"NotificationType": "ACTUAL", "ComparisonOperator": "LESS_THAN", "Threshold": 10.0,
         "ThresholdType": "PERCENTAGE"},
    ]  # fmt: skip
    assert threshold_ratios(items) == (0.8, 0.95)
    assert threshold_ratios(items[:1]) == (0.8, None)
    assert threshold_ratios(items[2:4]) == (None, None)
    assert threshold_ratios([{**items[0], "Threshold": 33.3}, items[1]]) == (0.333, 0.95)


def test_planned_limits_pick_the_current_period() -> None:
    start = int(datetime(2026, 8, 1, tzinfo=UTC).timestamp())
    budget = {
        "BudgetName": "planned",
        "BudgetType": "COST",
        "TimeUnit": "MONTHLY",
        "PlannedBudgetLimits": {
            str(start - 31 * 86400): money("100"),
            str(start): money("250.50"),
        },
        "CalculatedSpend": {"ActualSpend": money("10")},
    }
    parsed = parse_budget(budget, NOW)
    assert isinstance(parsed, ProviderBudget)
    assert (parsed.limit, parsed.actual, parsed.forecast) == (
        Decimal("250.50"),
        Decimal("10"),
        None,
    )
    later = parse_budget(budget, datetime(2026, 9, 2, tzinfo=UTC))
    assert later == "budget 'planned' has no limit for the current period"


def test_quarterly_annual_and_custom_budgets_keep_their_periods() -> None:
    budgets = load_fixture("aws_budgets", "describe_budgets_periods")["Budgets"]
    parsed = {b["BudgetName"]: parse_budget(b, NOW) for b in budgets}
    assert all(isinstance(p, ProviderBudget) for p in parsed.values()), parsed
    fiscal_year, fiscal_quarter, grant = (
        parsed[n] for n in ("fy-platform", "fq-data", "grant-2026")
    )
    assert isinstance(fiscal_year, ProviderBudget)
    assert isinstance(fiscal_quarter, ProviderBudget)
    assert isinstance(grant, ProviderBudget)
    # ANNUALLY from 1 April 2025: April to March; on 21 August 2026, April 2026 to April 2027.
    assert fiscal_year.period == Period("yearly-april")
    assert (fiscal_year.limit, fiscal_year.actual, fiscal_year.forecast) == (
        Decimal("120000.0"), Decimal("48211.17"), Decimal("101500.4")
    )  # fmt: skip
    window = window_at(fiscal_year.period, NOW)
    assert (window.start, window.end) == (
        datetime(2026, 4, 1, tzinfo=UTC), datetime(2027, 4, 1, tzinfo=UTC)
    )  # fmt: skip
    # QUARTERLY from 1 February: February-April, May-July, August-October, ...
    assert fiscal_quarter.period == Period("quarterly-february")
    window = window_at(fiscal_quarter.period, NOW)
    assert (window.start, window.end) == (
        datetime(2026, 8, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC)
    )  # fmt: skip
    # CUSTOM from 1 March to 1 October 00:00 (exclusive): 1 March to 30 September.
    assert grant.period == Period("2026-03-01/2026-09-30")
    assert grant.limit == Decimal("25000.0")
    # A quarterly budget from April is a calendar quarter; one that ended is skipped.
    april = {**budgets[1], "TimePeriod": {"Start": budgets[0]["TimePeriod"]["Start"]}}
    assert parse_budget(april, NOW).period == Period.QUARTERLY  # type: ignore[union-attr]
    assert parse_budget(budgets[2], datetime(2026, 10, 1, tzinfo=UTC)) == (
        "budget 'grant-2026' has ended"
    )
    undated = {**budgets[2], "TimePeriod": {}}
    assert parse_budget(undated, NOW) == (
        "budget 'grant-2026' has time unit CUSTOM, without the dates it needs"
    )


# -- DescribeBudgets through moto --------------------------------------------------------


def test_cost_budgets_are_imported_with_spend_and_thresholds() -> None:
    with mock_aws():
        create_budget(
            "monthly-total",
            spend={
                "ActualSpend": money("604.4560000000000172803993336856365203857421875"),
                "ForecastedSpend": money("1210.25"),
            },
            notifications=[notification(80.0), notification(95.0), notification(50, "FORECASTED")],
        )
        create_budget("quarterly", limit="3000", time_unit="QUARTERLY", TimePeriod=CALENDAR)
        create_budget(
            "yearly",
            limit="12000",
            time_unit="ANNUALLY",
            notifications=[notification(90)],
            TimePeriod=CALENDAR,
        )
        create_budget("daily", limit="40", time_unit="DAILY", spend={"ActualSpend": money("3")})
        create_budget("usage-hours", budget_type="USAGE", limit=None,
                      PlannedBudgetLimits={"1785542400": {"Amount": "100", "Unit": "Hrs"}})  # fmt: skip
        create_budget("ri-coverage", budget_type="RI_COVERAGE", limit="80")
        create_budget(
            "ended",
            TimePeriod={
                "Start": datetime(2025, 1, 1, tzinfo=UTC),
                "End": datetime(2025, 12, 31, tzinfo=UTC),
            },
        )
        h = Harness()
        result = h.poll()
    budgets = by_key(result)
    assert sorted(budgets) == ["daily", "monthly-total", "quarterly", "yearly"]
    monthly = budgets["monthly-total"]
    assert monthly == ProviderBudget(
        key="monthly-total",
        period=Period.MONTHLY,
        limit=Decimal("1000"),
        currency="USD",
        actual=Decimal("604.4560000000000172803993336856365203857421875"),
        forecast=Decimal("1210.25"),
        warning_ratio=0.8,
        stop_ratio=0.95,
    )
    assert budgets["quarterly"].period == Period.QUARTERLY
    assert (budgets["quarterly"].warning_ratio, budgets["quarterly"].stop_ratio) == (None, None)
    assert budgets["yearly"].period == Period.YEARLY
    assert budgets["yearly"].warning_ratio == 0.9
    assert (budgets["daily"].period, budgets["daily"].actual) == (Period.DAILY, Decimal("3"))
    assert result.lines == ()
    # GetCallerIdentity, DescribeBudgets, then one DescribeNotificationsForBudget per import.
    assert h.requests == Counter({"ok": 2 + 4})


def test_configured_account_and_name_filter_without_notifications() -> None:
    with mock_aws():
        create_budget("team-a", notifications=[notification(70)])
        create_budget("team-b", limit="20")
        h = Harness(account_id=DEFAULT_ACCOUNT_ID, budget_names=["team-a"], notifications=False)
        result = h.poll()
    (budget,) = result.budgets
    assert (budget.key, budget.limit, budget.warning_ratio) == ("team-a", Decimal("1000"), None)
    assert h.requests == Counter({"ok": 1})  # no STS call, no notification calls


def test_assumed_role_reads_the_role_account() -> None:
    with mock_aws():
        create_budget("member-budget", account=OTHER_ACCOUNT, limit="42")
        create_budget("payer-budget", limit="7")
        h = Harness(
            role_arn=f"arn:aws:iam::{OTHER_ACCOUNT}:role/budget-reader",
            external_id="ext-id-for-budgets",
        )
        result = h.poll()
    assert [b.key for b in result.budgets] == ["member-budget"]
    # AssumeRole, GetCallerIdentity, DescribeBudgets, DescribeNotificationsForBudget.
    assert h.requests == Counter({"ok": 4})


def test_every_page_is_read() -> None:
    # Budget a (10 USD a month) on page one, then b (20 USD, 1.5 spent) on page two.
    page_one = load_fixture("aws_budgets", "describe_budgets_page1")
    page_two = load_fixture("aws_budgets", "describe_budgets_page2")
    with mock_aws():
        h = Harness(account_id=DEFAULT_ACCOUNT_ID)
        with Stubber(h.provider.aws.client("budgets")) as stubber:
            base = {"AccountId": DEFAULT_ACCOUNT_ID, "MaxResults": 100}
            stubber.add_response("describe_budgets", page_one, base)
            stubber.add_response(
                "describe_budgets", page_two, {**base, "NextToken": page_one["NextToken"]}
            )
            # Budget a's notifications: actual spend over 60 %, then over 90 %.
            notes = load_fixture("aws_budgets", "describe_notifications_page1")
            more = load_fixture("aws_budgets", "describe_notifications_page2")
            for_a = {**base, "BudgetName": "a"}
            stubber.add_response("describe_notifications_for_budget", notes, for_a)
            stubber.add_response(
                "describe_notifications_for_budget",
                more,
                {**for_a, "NextToken": notes["NextToken"]},
            )
            stubber.add_response(
                "describe_notifications_for_budget",
                {"Notifications": []},
                {**base, "BudgetName": "b"},
            )
            result = h.poll()
            stubber.assert_no_pending_responses()
    budgets = by_key(result)
    assert (budgets["a"].warning_ratio, budgets["a"].stop_ratio) == (0.6, 0.9)
    assert budgets["b"].actual == Decimal("1.5")


def test_missing_permission_names_the_iam_action() -> None:
    with mock_aws():
        h = Harness(account_id=DEFAULT_ACCOUNT_ID)
        client = h.provider.aws.client("budgets")
        message = aws.access_denied(client, "describe_budgets", "budgets:ViewBudget", h.poll)
    assert "budgets:ViewBudget" in message


def test_budget_deleted_between_calls_has_no_thresholds() -> None:
    with mock_aws():
        h = Harness(account_id=DEFAULT_ACCOUNT_ID)
        with Stubber(h.provider.aws.client("budgets")) as stubber:
            stubber.add_response(
                "describe_budgets",
                {"Budgets": [{"BudgetName": "gone", "BudgetLimit": money("10"),
                              "TimeUnit": "MONTHLY", "BudgetType": "COST"}]},
            )  # fmt: skip
            stubber.add_client_error(
                "describe_notifications_for_budget",
                service_error_code="NotFoundException",
                http_status_code=400,
            )
            result = h.poll()
    assert by_key(result)["gone"].warning_ratio is None


def test_external_id_needs_a_role(write_config) -> None:
    path = write_config(
        """
        sources:
          - name: aws-budgets
            provider: aws_budgets
            external_id: abcdef
        """
    )
    with pytest.raises(ConfigError, match="external_id needs role_arn"):
        load_config(path)


def test_plain_http_endpoint_only_to_loopback(write_config) -> None:
    source = "sources:\n  - name: aws-budgets\n    provider: aws_budgets\n"
    with pytest.raises(ConfigError, match=r"sources\[0\]\.endpoint_url: must use https"):
        load_config(write_config(source + "    endpoint_url: http://budgets.amazonaws.com\n"))
    config = load_config(write_config(source + "    endpoint_url: http://localhost:5000\n"))
    assert config.sources[0].endpoint_url == "http://localhost:5000"


# -- whole exporter --------------------------------------------------------------------


def test_whole_exporter_budgets_take_limits_from_aws(make_engine) -> None:
    with mock_aws():
        create_budget(
            "aws-monthly",
            limit="200",
            spend={"ActualSpend": money("150.5"), "ForecastedSpend": money("210")},
            notifications=[notification(50), notification(75)],
        )
        create_budget("aws-quarterly", limit="900", time_unit="QUARTERLY",
                      spend={"ActualSpend": money("300")}, TimePeriod=CALENDAR)  # fmt: skip
        ce_backends[DEFAULT_ACCOUNT_ID]["global"].cost_usage_results_queue.append(
            {
                "GroupDefinitions": [{"Type": "DIMENSION", "Key": "SERVICE"}],
                "ResultsByTime": [
                    {
                        "TimePeriod": {"Start": "2026-08-01", "End": "2026-08-21"},
                        "Total": {},
                        "Groups": [
                            {"Keys": ["Amazon EC2"],
                             "Metrics": {"UnblendedCost": money("120.00")}},
                            {"Keys": ["Amazon S3"], "Metrics": {"UnblendedCost": money("30.00")}},
                        ],
                        "Estimated": True,
                    }
                ],
                "DimensionValueAttributes": [],
            }
        )  # fmt: skip
        engine = aws.engine_without_retries(
            make_engine,
            """
            sources:
              - name: aws
                provider: aws_cost_explorer
                forecast: false
              - name: aws-budgets
                provider: aws_budgets
            budgets:
              - name: from-aws
                limit_from: {source: aws-budgets, budget: aws-monthly}
                currency: USD
              - name: ce-against-aws-limit
                limit_from: {source: aws-budgets, budget: aws-monthly, thresholds: false}
                currency: USD
                sources: [aws]
              - name: quarter
                period: quarterly
                limit_from: {source: aws-budgets, budget: aws-quarterly}
                currency: USD
            """,
            NOW,
        )
        assert engine.poll_all_once()
    text = engine.snapshot.rendered.text.decode()
    # Spend and forecast straight from AWS Budgets, thresholds from its notifications.
    from_aws = {
        "budget_limit_amount": 200,
        "budget_spend_amount": 150.5,
        "budget_forecast_amount": 210,
        "budget_warning_threshold_ratio": 0.5,
        "budget_stop_threshold_ratio": 0.75,
    }
    assert {name: aws.metric_value(text, name, budget="from-aws") for name in from_aws} == from_aws
    # The AWS limit over Cost Explorer spend, with the exporter's own thresholds.
    assert aws.metric_value(text, "budget_limit_amount", budget="ce-against-aws-limit") == 200
    assert aws.metric_value(text, "budget_spend_amount", budget="ce-against-aws-limit") == 150
    assert (
        aws.metric_value(text, "budget_warning_threshold_ratio", budget="ce-against-aws-limit")
        == 0.8
    )
    assert (
        aws.metric_value(text, "budget_spend_amount", budget="quarter", period="quarterly") == 300
    )
    assert (
        aws.metric_value(text, "budget_source_cost_amount", source="aws", service_name="Amazon EC2")
        == 120
    )
    assert (
        aws.metric_value(text, "budget_source_up", source="aws-budgets", provider="aws_budgets")
        == 1
    )
    assert aws.metric_value(text, "budget_source_up", source="aws") == 1
    # GetCallerIdentity, DescribeBudgets, two DescribeNotificationsForBudget.
    assert (
        aws.metric_value(
            text, "budget_source_api_requests_total", source="aws-budgets", status="ok"
        )
        == 4
    )
