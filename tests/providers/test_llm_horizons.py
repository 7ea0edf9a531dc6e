"""Billed providers report their data horizon honestly (``PollResult.data_through``).

OpenAI and Anthropic answer in daily buckets: the horizon is the start of the
newest bucket still open (today's), and that bucket's spend is ``unsettled``.
Cost Explorer's horizon is tested with its provider (the query's exclusive End).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import responses

from budget_exporter.core.errors import SourceError
from budget_exporter.providers import get_provider
from tests.support.llm import MONTH, NOW, make_provider

OPENAI = "https://api.openai.test/v1"
ANTHROPIC = "https://api.anthropic.test"
TODAY = datetime(NOW.year, NOW.month, NOW.day, tzinfo=UTC)


def openai_bucket(start: datetime, amount: str, end: datetime | None = None) -> dict[str, Any]:
    bucket: dict[str, Any] = {
        "object": "bucket",
        "start_time": int(start.timestamp()),
        "results": [
            {
                "object": "organization.costs.result",
                "amount": {"value": amount, "currency": "usd"},
                "line_item": None,
                "project_id": None,
            }
        ],
    }
    if end is not None:
        bucket["end_time"] = int(end.timestamp())
    return bucket


def page(buckets: list[dict[str, Any]]) -> dict[str, Any]:
    return {"object": "page", "data": buckets, "has_more": False, "next_page": None}


def openai(buckets: list[dict[str, Any]]) -> Any:
    responses.get(f"{OPENAI}/organization/costs", json=page(buckets))
    return make_provider("openai", admin_key="sk-admin-x", base_url=OPENAI).poll([MONTH])


@responses.activate
def test_openai_horizon_is_the_start_of_the_open_bucket() -> None:
    yesterday = TODAY - timedelta(days=1)
    result = openai(
        [
            openai_bucket(yesterday, "10", TODAY),
            openai_bucket(TODAY, "2.5", TODAY + timedelta(days=1)),  # still open
        ]
    )
    assert result.data_through == TODAY
    assert [ln.amount for ln in result.lines] == [Decimal("12.5")]  # the whole month so far
    assert [ln.amount for ln in result.unsettled] == [Decimal("2.5")]  # today's, not final


@responses.activate
def test_openai_horizon_without_an_open_bucket_is_the_last_end() -> None:
    closed_at = NOW - timedelta(hours=2)
    result = openai([openai_bucket(TODAY - timedelta(days=1), "10", closed_at)])
    assert result.data_through == closed_at and result.unsettled == ()


@responses.activate
def test_openai_buckets_without_end_time_are_a_day_long() -> None:
    result = openai([openai_bucket(TODAY - timedelta(days=2), "1"), openai_bucket(TODAY, "3")])
    assert result.data_through == TODAY
    assert [ln.amount for ln in result.unsettled] == [Decimal("3")]


@responses.activate
def test_an_empty_month_has_its_start_as_horizon() -> None:
    assert openai([]).data_through == MONTH.start


@responses.activate
def test_anthropic_horizon_is_the_start_of_the_open_bucket() -> None:
    def bucket(start: datetime, cents: str) -> dict[str, Any]:
        return {
            "starting_at": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "ending_at": (start + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "results": [{"currency": "USD", "amount": cents, "workspace_id": None}],
        }

    responses.get(
        f"{ANTHROPIC}/v1/organizations/cost_report",
        json={
            "data": [bucket(TODAY - timedelta(days=1), "500"), bucket(TODAY, "125")],
            "has_more": False,
            "next_page": None,
        },
    )
    provider = make_provider("anthropic", admin_key="sk-ant-admin-x", base_url=ANTHROPIC)
    result = provider.poll([MONTH])
    assert result.data_through == TODAY
    assert sum(ln.amount for ln in result.lines) == Decimal("6.25")
    assert sum(ln.amount for ln in result.unsettled) == Decimal("1.25")


@responses.activate
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1_795_132_800, datetime(2026, 11, 20, tzinfo=UTC)),
        ("1795132800.5", datetime(2026, 11, 20, 0, 0, 0, 500000, tzinfo=UTC)),
        ("2026-11-20T06:00:00Z", datetime(2026, 11, 20, 6, tzinfo=UTC)),
        ("2026-11-20T07:00:00+01:00", datetime(2026, 11, 20, 6, tzinfo=UTC)),
    ],
)
def test_http_json_reads_its_horizon_from_the_answer(value: Any, expected: datetime) -> None:
    responses.get("https://usage.test/costs", json={"total": 12, "through": value})
    provider = make_provider(
        "http_json",
        url="https://usage.test/costs",
        amount="total",
        currency="USD",
        data_through="through",
    )
    assert provider.poll([MONTH]).data_through == expected


@responses.activate
@pytest.mark.parametrize("value", [None, "yesterday", "2026-11-20T06:00:00", True])
def test_http_json_refuses_an_unreadable_horizon(value: Any) -> None:
    responses.get("https://usage.test/costs", json={"total": 12, "through": value})
    provider = make_provider(
        "http_json",
        url="https://usage.test/costs",
        amount="total",
        currency="USD",
        data_through="through",
    )
    with pytest.raises(SourceError, match=r"data_through \(through\)"):
        provider.poll([MONTH])


def test_which_providers_report_a_horizon() -> None:
    reporting = {
        name
        for name in ("openai", "anthropic", "aws_cost_explorer", "static", "demo", "hunter")
        if get_provider(name).reports_horizon
    }
    assert reporting == {"openai", "anthropic", "aws_cost_explorer"}
