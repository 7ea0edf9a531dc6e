"""What the aws_cost_explorer tests share: a harness with forecasts off, moto's queue of
GetCostAndUsage answers, and the answers themselves.

The answers are recorded in ``tests/providers/aws_cost_explorer/fixtures/`` as Cost Explorer
sends them (AWS's API reference for GetCostAndUsage and GetCostForecast): amounts as
strings, tag keys as ``Key$Value``, ``NextPageToken`` only when more pages exist.  moto
serves the GetCostAndUsage ones; botocore's Stubber, which checks them against the service
model, serves the GetCostForecast ones.  :func:`grouped`, :func:`total` and
:func:`forecast_answer` derive variants from recorded answers.
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
from tests.support.fixtures import load_fixture

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


def answer(name: str) -> Any:
    """The recorded answer ``name`` (``tests/providers/aws_cost_explorer/fixtures/``)."""
    return load_fixture("aws_cost_explorer", name)


def group(keys: list[str], amount: str, metric: str = "UnblendedCost") -> dict[str, Any]:
    """One entry of ``Groups``, shaped as those of the recorded ``by_service`` answer."""
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
    """The recorded ``by_service`` answer (one month-to-date period, grouped by SERVICE)
    with its groups, period, estimated flag and, when given, token, grouping and
    attributes replaced."""
    page: dict[str, Any] = answer("by_service")
    (period,) = page["ResultsByTime"]
    period.update(TimePeriod={"Start": start, "End": end}, Groups=groups, Estimated=estimated)
    if definitions:
        page["GroupDefinitions"] = definitions
    if attributes:
        page["DimensionValueAttributes"] = attributes
    if token:
        page["NextPageToken"] = token
    return page


def total(amount: str, *, start: str, end: str, estimated: bool) -> dict[str, Any]:
    """One ungrouped ``ResultsByTime`` entry: the first of the recorded
    ``month_and_quarter_ungrouped`` answer with its amount, period and flag replaced."""
    entry: dict[str, Any] = answer("month_and_quarter_ungrouped")["ResultsByTime"][0]
    entry.update(TimePeriod={"Start": start, "End": end}, Estimated=estimated)
    entry["Total"]["UnblendedCost"]["Amount"] = amount
    return entry


def by_dims(result: PollResult, period: Period = Period.MONTHLY) -> dict[tuple, Decimal]:
    return {ln.dimensions: ln.amount for ln in result.lines if ln.period == period}


def sample(result: PollResult, name: str, **labels: str) -> float | None:
    for s in result.samples:
        if s.name == name and dict(s.labels) == labels:
            return s.value
    return None


def forecast_answer(amount: str, start: str, end: str) -> dict[str, Any]:
    """The recorded ``forecast`` answer (one monthly period, no prediction interval) with
    its amount and period replaced."""
    document: dict[str, Any] = answer("forecast")
    document["Total"]["Amount"] = amount
    (period,) = document["ForecastResultsByTime"]
    period.update(TimePeriod={"Start": start, "End": end}, MeanValue=amount)
    return document


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
