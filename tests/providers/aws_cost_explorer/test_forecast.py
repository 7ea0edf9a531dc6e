"""aws_cost_explorer: GetCostForecast (botocore's Stubber) and the month's forecast."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from moto import mock_aws

from budget_exporter.core.errors import SourceError
from budget_exporter.core.model import Period
from tests.support.aws import offline_aws  # noqa: F401 (autouse fixture)
from tests.support.aws_cost_explorer import (
    NOW,
    Harness,
    by_dims,
    expect_forecast,
    group,
    grouped,
    queue,
    refuse_forecast,
    sample,
    sent,
)


def test_forecast_is_spend_plus_aws_forecast_for_the_rest_of_the_month() -> None:
    with mock_aws():
        queue(grouped([group(["Amazon EC2"], "200.00"), group(["Amazon S3"], "10.00")]))
        h = Harness(forecast=True, include_credits=False)
        stubber = h.stub_forecast()
        expect_forecast(
            stubber,
            "330.0",
            "2026-08-21",
            Metric="UNBLENDED_COST",
            Filter={"Not": {"Dimensions": {"Key": "RECORD_TYPE", "Values": ["Credit"]}}},
        )
        result = h.poll()
        stubber.assert_no_pending_responses()
    (forecast,) = result.forecasts
    assert (forecast.period, forecast.amount, forecast.currency) == (
        Period.MONTHLY,
        Decimal("540.00"),
        "USD",
    )
    assert sample(result, "budget_source_forecast_available", period="monthly") == 1


def test_forecast_has_its_own_interval_and_is_prorated_between_fetches() -> None:
    with mock_aws():
        queue(
            grouped([group(["Amazon EC2"], "200.00", "NetAmortizedCost")]),
            grouped([group(["Amazon EC2"], "230.00", "NetAmortizedCost")], end="2026-08-22"),
            grouped([group(["Amazon EC2"], "240.00", "NetAmortizedCost")], end="2026-08-23"),
        )
        h = Harness(forecast=True, forecast_interval="36h", metric="NetAmortizedCost")
        stubber = h.stub_forecast()
        expect_forecast(stubber, "330.0", "2026-08-21", Metric="NET_AMORTIZED_COST")
        first = h.poll()
        h.now = NOW + timedelta(days=1)  # within 36h: no new forecast request
        second = h.poll()
        stubber.assert_no_pending_responses()
        expect_forecast(stubber, "270.0", "2026-08-23", Metric="NET_AMORTIZED_COST")
        h.now = NOW + timedelta(days=2)  # 48h > 36h: fetched again
        third = h.poll()
        stubber.assert_no_pending_responses()
    assert first.forecasts[0].amount == Decimal("530.0")
    # 330 over 11 days left, now 10 days left: 300 on top of the new spend.
    assert second.forecasts[0].amount == Decimal("530.0")
    assert third.forecasts[0].amount == Decimal("510.0")


def test_data_unavailable_falls_back_without_failing_the_source() -> None:
    with mock_aws():
        queue(
            grouped([group(["Amazon EC2"], "3.00")]),
            grouped([group(["Amazon EC2"], "4.00")], end="2026-08-22"),
        )
        h = Harness(forecast=True)
        stubber = h.stub_forecast()
        refuse_forecast(
            stubber,
            "DataUnavailableException",
            "Insufficient amount of historical data to generate forecast.",
        )
        result = h.poll()
        h.now = NOW + timedelta(days=1) - timedelta(minutes=1)  # still within 24h
        later = h.poll()
        stubber.assert_no_pending_responses()
    assert result.forecasts == () and later.forecasts == ()
    assert by_dims(result) == {(("service_name", "Amazon EC2"),): Decimal("3.00")}
    assert by_dims(later) == {(("service_name", "Amazon EC2"),): Decimal("4.00")}
    assert sample(result, "budget_source_forecast_available", period="monthly") == 0


def test_other_forecast_errors_fall_back_and_are_retried_next_poll(caplog) -> None:
    with mock_aws():
        queue(grouped([group(["Amazon EC2"], "3.00")]))
        h = Harness(forecast=True)
        stubber = h.stub_forecast()
        refuse_forecast(
            stubber, "AccessDeniedException", "not authorized to perform: ce:GetCostForecast"
        )
        expect_forecast(stubber, "7.0", "2026-08-21")
        with caplog.at_level(logging.WARNING, logger="budget_exporter.aws"):
            failed = h.poll()
        retried = h.poll()
        stubber.assert_no_pending_responses()
    assert failed.forecasts == ()
    assert "ce:GetCostForecast" in caplog.text
    assert retried.forecasts[0].amount == Decimal("10.00")


def test_forecast_on_the_first_day_needs_no_spend_request() -> None:
    first = datetime(2026, 9, 1, 6, 0, tzinfo=UTC)
    with mock_aws():
        h = Harness(now=first, forecast=True)
        stubber = h.stub_forecast()
        expect_forecast(stubber, "900.0", "2026-09-01", "2026-10-01", Metric="UNBLENDED_COST")
        result = h.poll()
        assert sent() == []
    assert result.lines == ()
    assert result.forecasts[0].amount == Decimal("900.0")


def test_rejected_credentials_on_the_forecast_fail_the_source() -> None:
    # On the first day the forecast is the only request: bad keys must not look healthy.
    with mock_aws():
        h = Harness(now=datetime(2026, 9, 1, 6, 0, tzinfo=UTC), forecast=True)
        stubber = h.stub_forecast()
        refuse_forecast(
            stubber,
            "ExpiredTokenException",
            "The security token included in the request is expired",
        )
        with pytest.raises(SourceError) as info:
            h.poll()
    assert (
        str(info.value) == "GetCostForecast: AWS rejected the credentials (ExpiredTokenException)"
    )
