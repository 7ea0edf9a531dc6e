"""What the aws_cost_explorer tests share: a harness with forecasts off, moto's queue of
GetCostAndUsage answers, pages shaped as Cost Explorer sends them (amounts as strings,
tag keys as ``Key$Value``, ``NextPageToken``) and Stubber answers for GetCostForecast.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from botocore.stub import Stubber
from moto.ce.models import ce_backends
from moto.core import DEFAULT_ACCOUNT_ID

from budget_exporter.core.model import Period, PollResult
from budget_exporter.core.periods import window_at
from budget_exporter.providers.aws_cost_explorer import CostExplorerProvider
from tests.support import aws

NOW = datetime(2026, 8, 21, 12, 0, tzinfo=UTC)
MONTH = window_at(Period.MONTHLY, NOW)
SERVICE_AND_TAG = [
    {"Type": "DIMENSION", "Key": "SERVICE"},
    {"Type": "TAG", "Key": "Environment"},
]


class Harness(aws.Harness):
    """Cost Explorer with forecasts off unless asked, and one retry by default."""

    provider_class = CostExplorerProvider
    source = "aws"

    def __init__(self, now: datetime = NOW, retries: int = 1, **settings: Any) -> None:
        super().__init__(now, retries, **{"forecast": False, **settings})

    def poll(self, *periods: Period) -> PollResult:
        windows = [window_at(p, self.now) for p in periods or (Period.MONTHLY,)]
        return self.provider.poll(windows)

    def stub_forecast(self) -> Stubber:
        """A Stubber on a second CE client of the same session, used for forecasts only."""
        client = self.provider.aws.new_client("ce")
        stubber = Stubber(client)
        stubber.activate()
        self.provider._forecast_client = lambda: client  # type: ignore[method-assign]
        return stubber


def queue(*results: dict[str, Any], account: str = DEFAULT_ACCOUNT_ID) -> None:
    """Queue GetCostAndUsage answers in moto, in the order the exporter asks."""
    ce_backends[account]["global"].cost_usage_results_queue.extend(results)


def sent(account: str = DEFAULT_ACCOUNT_ID) -> list[dict[str, Any]]:
    """The GetCostAndUsage request bodies moto answered from the queue, in order."""
    return [json.loads(body) for body in ce_backends[account]["global"].cost_usage_results]


def group(keys: list[str], amount: str, metric: str = "UnblendedCost") -> dict[str, Any]:
    return {"Keys": keys, "Metrics": {metric: {"Amount": amount, "Unit": "USD"}}}


def grouped(
    groups: list[dict[str, Any]],
    *,
    start: str = "2026-08-01",
    end: str = "2026-08-21",
    estimated: bool = True,
    token: str | None = None,
    definitions: list[dict[str, str]] | None = None,
    attributes: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    page: dict[str, Any] = {
        "GroupDefinitions": definitions or [{"Type": "DIMENSION", "Key": "SERVICE"}],
        "ResultsByTime": [
            {
                "TimePeriod": {"Start": start, "End": end},
                "Total": {},
                "Groups": groups,
                "Estimated": estimated,
            }
        ],
        "DimensionValueAttributes": attributes or [],
    }
    if token:
        page["NextPageToken"] = token
    return page


def total(amount: str, *, start: str, end: str, estimated: bool) -> dict[str, Any]:
    return {
        "TimePeriod": {"Start": start, "End": end},
        "Total": {"UnblendedCost": {"Amount": amount, "Unit": "USD"}},
        "Groups": [],
        "Estimated": estimated,
    }


def by_dims(result: PollResult, period: Period = Period.MONTHLY) -> dict[tuple, Decimal]:
    return {ln.dimensions: ln.amount for ln in result.lines if ln.period == period}


def sample(result: PollResult, name: str, **labels: str) -> float | None:
    for s in result.samples:
        if s.name == name and dict(s.labels) == labels:
            return s.value
    return None


def forecast_answer(amount: str, start: str, end: str) -> dict[str, Any]:
    return {
        "Total": {"Amount": amount, "Unit": "USD"},
        "ForecastResultsByTime": [
            {"TimePeriod": {"Start": start, "End": end}, "MeanValue": amount}
        ],
    }


def expect_forecast(
    stubber: Stubber, amount: str, start: str, end: str = "2026-09-01", **request: Any
) -> None:
    """Stub one GetCostForecast answer of ``amount`` for [start, end).

    Given ``request`` fields (Metric, Filter...), the Stubber also checks that the exporter
    asks for exactly that period, monthly, with those fields.
    """
    expected = None
    if request:
        expected = {"TimePeriod": {"Start": start, "End": end}, "Granularity": "MONTHLY", **request}
    stubber.add_response("get_cost_forecast", forecast_answer(amount, start, end), expected)


def refuse_forecast(stubber: Stubber, code: str, message: str) -> None:
    """Stub one GetCostForecast error answer (HTTP 400, as Cost Explorer sends them)."""
    stubber.add_client_error(
        "get_cost_forecast",
        service_error_code=code,
        service_message=message,
        http_status_code=400,
    )
