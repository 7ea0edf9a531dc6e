"""aws_cost_explorer: GetCostAndUsage answers (queued in moto) turned into spend lines.

The answers are recorded in ``fixtures/`` as Cost Explorer sends them: amounts are
strings, tag keys come as ``Key$Value``, pages carry ``NextPageToken``.  Tests that only
need a service or two derive their answer from the recorded ``by_service`` with
:func:`tests.support.aws_cost_explorer.grouped`.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from moto import mock_aws

from budget_exporter.core.errors import SourceError
from budget_exporter.core.model import Period
from budget_exporter.providers.aws_cost_explorer import parse_pages
from tests.support.aws import offline_aws  # noqa: F401 (autouse fixture)
from tests.support.aws_cost_explorer import (
    SERVICE_AND_TAG,
    Harness,
    answer,
    by_dims,
    group,
    grouped,
    queue,
    sample,
    sent,
)


def test_every_page_groups_tags_and_estimated_flag() -> None:
    with mock_aws():
        # Page 1: S3 (Dev) and EC2 (Prod), then "page-2-token"; page 2: EC2 and Tax untagged.
        queue(answer("by_service_and_tag_page1"), answer("by_service_and_tag_page2"))
        h = Harness(group_by=["SERVICE", "TAG:Environment"])
        result = h.poll()
        bodies = sent()

    assert by_dims(result) == {
        (("service_name", "Amazon Simple Storage Service"), ("tag_environment", "Dev")): Decimal(
            "0.2682364644"
        ),
        (("service_name", "Amazon Elastic Compute Cloud - Compute"), ("tag_environment", "Prod")): (
            Decimal("812.5")
        ),
        (("service_name", "Amazon Elastic Compute Cloud - Compute"), ("tag_environment", "")): (
            Decimal("40.0000000001")
        ),
        (("service_name", "Tax"), ("tag_environment", "")): Decimal("-3.10"),
    }
    assert {ln.currency for ln in result.lines} == {"USD"}
    assert sample(result, "budget_source_cost_estimated") == 1
    # Two pages: two billed requests, both counted; the second carries the token.
    assert h.requests == Counter({"ok": 2})
    assert len(bodies) == 2
    first, second = bodies
    assert first == {
        "TimePeriod": {"Start": "2026-08-01", "End": "2026-08-21"},
        "Granularity": "MONTHLY",
        "Metrics": ["UnblendedCost"],
        "GroupBy": SERVICE_AND_TAG,
    }
    assert second == {**first, "NextPageToken": "page-2-token"}


def test_ungrouped_total_with_final_figures_and_other_metric() -> None:
    with mock_aws():
        queue(answer("ungrouped_amortized"))
        h = Harness(group_by=[], metric="AmortizedCost")
        result = h.poll()
        (body,) = sent()
    assert by_dims(result) == {(): Decimal("4.1294931175")}
    assert sample(result, "budget_source_cost_estimated") == 0
    assert body["Metrics"] == ["AmortizedCost"]
    assert "GroupBy" not in body


def test_linked_accounts_get_names_and_regions() -> None:
    with mock_aws():
        # 111111111111 (production) in eu-west-1; 222222222222 (staging) in us-east-1, global.
        queue(answer("by_linked_account_and_region"))
        result = Harness(group_by=["LINKED_ACCOUNT", "REGION"]).poll()
    assert by_dims(result) == {
        (
            ("region_id", "eu-west-1"),
            ("sub_account_id", "111111111111"),
            ("sub_account_name", "production"),
        ): Decimal("10.5"),
        (
            ("region_id", "us-east-1"),
            ("sub_account_id", "222222222222"),
            ("sub_account_name", "staging"),
        ): Decimal("2"),
        (
            ("region_id", "global"),
            ("sub_account_id", "222222222222"),
            ("sub_account_name", "staging"),
        ): Decimal("0.25"),
    }


def test_cost_category_values_lose_their_prefix() -> None:
    with mock_aws():
        queue(answer("by_cost_category"))  # Team$Platform 7.5, Team$ 1.25
        result = Harness(group_by=["COST_CATEGORY:Team"]).poll()
    assert by_dims(result) == {
        (("x_cost_category_team", "Platform"),): Decimal("7.5"),
        (("x_cost_category_team", ""),): Decimal("1.25"),
    }


RECORD_TYPES = [
    {"Type": "DIMENSION", "Key": "SERVICE"},
    {"Type": "DIMENSION", "Key": "RECORD_TYPE"},
]
BY_RECORD_TYPE = [
    "SERVICE",
    {"type": "DIMENSION", "key": "RECORD_TYPE", "label": "charge_category"},
]


def test_credits_included_by_default() -> None:
    # Grouped by record type, as AWS answers it: a promotional credit is its own negative line.
    with mock_aws():
        queue(answer("by_service_and_record_type"))
        result = Harness(group_by=BY_RECORD_TYPE).poll()
        (body,) = sent()
    assert "Filter" not in body, "nothing is left out by default"
    assert body["GroupBy"] == RECORD_TYPES
    lines = by_dims(result)
    assert lines[(("charge_category", "Credit"), ("service_name", "Amazon EC2"))] == Decimal("-30")
    assert sum(lines.values()) == Decimal("76.50"), "the total nets the credit"


def test_credits_excluded_on_request() -> None:
    # With the Not RECORD_TYPE filter AWS leaves the credit out of its answer.
    with mock_aws():
        queue(answer("by_service_and_record_type_without_credits"))
        result = Harness(group_by=BY_RECORD_TYPE, include_credits=False).poll()
        (body,) = sent()
    assert body["Filter"] == {"Not": {"Dimensions": {"Key": "RECORD_TYPE", "Values": ["Credit"]}}}
    assert sum(by_dims(result).values()) == Decimal("106.50")


def test_credits_and_refunds_excluded_on_request_with_user_filter() -> None:
    user_filter = {"Dimensions": {"Key": "LINKED_ACCOUNT", "Values": ["111111111111"]}}
    with mock_aws():
        queue(grouped([group(["Amazon EC2"], "100.00"), group(["AWS Support"], "0")]))
        h = Harness(include_credits=False, include_refunds=False, filter=user_filter)
        result = h.poll()
        (body,) = sent()
    assert body["Filter"] == {
        "And": [
            user_filter,
            {"Not": {"Dimensions": {"Key": "RECORD_TYPE", "Values": ["Credit", "Refund"]}}},
        ]
    }
    assert sum(by_dims(result).values()) == Decimal("100.00")


def test_first_day_of_month_sends_no_request() -> None:
    first = datetime(2026, 9, 1, 0, 30, tzinfo=UTC)
    with mock_aws():
        queue(grouped([group(["Amazon EC2"], "999")]))  # must stay unused
        h = Harness(now=first)
        result = h.poll()
        assert sent() == []
    assert result.lines == ()
    assert h.requests == Counter()
    assert sample(result, "budget_source_cost_estimated") is None
    assert result.data_through == datetime(2026, 9, 1, tzinfo=UTC)  # covers nothing yet


def test_the_data_horizon_is_the_exclusive_end_of_the_query() -> None:
    with mock_aws():
        queue(grouped([group(["Amazon EC2"], "1.25")]))
        result = Harness().poll()
        (body,) = sent()
    assert body["TimePeriod"]["End"] == "2026-08-21"
    assert result.data_through == datetime(2026, 8, 21, tzinfo=UTC)
    assert result.unsettled == ()  # today's partial costs are never in the answer


def test_settle_lag_moves_the_horizon_back_and_reports_those_days_unsettled() -> None:
    with mock_aws():
        queue(
            grouped([group(["Amazon EC2"], "100.00"), group(["Amazon S3"], "5.00")]),
            grouped([group(["Amazon EC2"], "7.50")], start="2026-08-20", end="2026-08-21"),
        )
        result = Harness(settle_lag="1d").poll()
        month, late = sent()
    assert month["TimePeriod"] == {"Start": "2026-08-01", "End": "2026-08-21"}
    assert late["TimePeriod"] == {"Start": "2026-08-20", "End": "2026-08-21"}
    assert result.data_through == datetime(2026, 8, 20, tzinfo=UTC)
    assert by_dims(result) == {
        (("service_name", "Amazon EC2"),): Decimal("100.00"),  # every line still counts ...
        (("service_name", "Amazon S3"),): Decimal("5.00"),
    }
    # ... but yesterday's part is unsettled: a joined meter counts those hours instead.
    assert [(ln.period, ln.dimensions, ln.amount) for ln in result.unsettled] == [
        (Period.MONTHLY, (("service_name", "Amazon EC2"),), Decimal("7.50"))
    ]


def test_settle_lag_over_the_whole_window_asks_nothing_more() -> None:
    with mock_aws():
        queue(grouped([group(["Amazon EC2"], "3.00")], start="2026-09-01", end="2026-09-02"))
        result = Harness(now=datetime(2026, 9, 2, 6, tzinfo=UTC), settle_lag="2d").poll()
        (body,) = sent()  # Aug 31 is not in the September window: one request serves both
    assert body["TimePeriod"] == {"Start": "2026-09-01", "End": "2026-09-02"}
    assert result.data_through == datetime(2026, 8, 31, tzinfo=UTC)
    assert [ln.amount for ln in result.unsettled] == [Decimal("3.00")]
    with mock_aws():
        result = Harness(now=datetime(2026, 9, 1, 6, tzinfo=UTC), settle_lag="1d").poll()
        assert sent() == []  # the first day: nothing to ask, nothing unsettled
    assert (result.data_through, result.unsettled) == (datetime(2026, 8, 31, tzinfo=UTC), ())


def test_month_and_quarter_come_from_one_request() -> None:
    with mock_aws():
        queue(answer("month_and_quarter_ungrouped"))  # July: 300.00 final; August: 120.50
        h = Harness(group_by=[])
        result = h.poll(Period.MONTHLY, Period.QUARTERLY)
        (body,) = sent()
    assert body["TimePeriod"] == {"Start": "2026-07-01", "End": "2026-08-21"}
    assert by_dims(result, Period.MONTHLY) == {(): Decimal("120.50")}
    assert by_dims(result, Period.QUARTERLY) == {(): Decimal("420.50")}
    assert sample(result, "budget_source_cost_estimated") == 1
    assert h.requests == Counter({"ok": 1})


def test_max_pages_stops_a_runaway_bill() -> None:
    with mock_aws():
        queue(*(grouped([group([f"svc{i}"], "1")], token=f"t{i}") for i in range(5)))
        h = Harness(max_pages=3)
        with pytest.raises(SourceError, match=r"more than max_pages \(3\)"):
            h.poll()
    assert h.requests == Counter({"ok": 3})


def test_parser_rejects_malformed_amounts() -> None:
    page = grouped([group(["Amazon EC2"], "12,50")])
    with pytest.raises(SourceError, match="not a number"):
        parse_pages([page], "UnblendedCost", 1)
    page = grouped([group(["Amazon EC2", "extra"], "1")])
    with pytest.raises(SourceError, match="expected 1"):
        parse_pages([page], "UnblendedCost", 1)
