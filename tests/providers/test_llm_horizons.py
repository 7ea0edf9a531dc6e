"""Billed providers report their data horizon honestly (``PollResult.data_through``).

OpenAI and Anthropic answer in daily buckets: the horizon is the start of the
newest bucket still open (today's), and that bucket's spend is ``unsettled``.
Cost Explorer's horizon is tested with its provider (the query's exclusive End).

The answers are the providers' recorded ones (``openai/fixtures/``, ``anthropic/fixtures/``)
for :data:`tests.support.llm.NOW`: yesterday's closed bucket and today's open one.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import responses

from budget_exporter.core.errors import SourceError
from budget_exporter.providers import get_provider
from tests.support.fixtures import load_fixture
from tests.support.llm import MONTH, NOW, make_provider

OPENAI = "https://api.openai.test/v1"
ANTHROPIC = "https://api.anthropic.test"
TODAY = datetime(NOW.year, NOW.month, NOW.day, tzinfo=UTC)


def openai_answer() -> dict[str, Any]:
    """OpenAI's recorded costs: 10 USD yesterday (closed), 2.5 USD today (still open)."""
    document: dict[str, Any] = load_fixture("openai", "costs_yesterday_and_today")
    return document


def openai(document: dict[str, Any]) -> Any:
    responses.get(f"{OPENAI}/organization/costs", json=document)
    return make_provider("openai", admin_key="sk-admin-x", base_url=OPENAI).poll([MONTH])


def unix(moment: datetime) -> int:
    return int(moment.timestamp())


@responses.activate
def test_openai_horizon_is_the_start_of_the_open_bucket() -> None:
    result = openai(openai_answer())
    assert result.data_through == TODAY
    assert [ln.amount for ln in result.lines] == [Decimal("12.5")]  # the whole month so far
    assert [ln.amount for ln in result.unsettled] == [Decimal("2.5")]  # today's, not final


@responses.activate
def test_openai_horizon_without_an_open_bucket_is_the_last_end() -> None:
    closed_at = NOW - timedelta(hours=8)  # longer ago than the default settle_lag (6h)
    document = openai_answer()
    del document["data"][1]  # no bucket for today; yesterday's ends eight hours ago
    document["data"][0]["end_time"] = unix(closed_at)
    result = openai(document)
    assert result.data_through == closed_at and result.unsettled == ()


@responses.activate
def test_openai_buckets_without_end_time_are_a_day_long() -> None:
    document = openai_answer()
    before, today = document["data"]
    before.update(start_time=unix(TODAY - timedelta(days=2)))
    before["results"][0]["amount"]["value"] = "1"
    today["results"][0]["amount"]["value"] = "3"
    for bucket in (before, today):
        del bucket["end_time"]
    result = openai(document)
    assert result.data_through == TODAY
    assert [ln.amount for ln in result.unsettled] == [Decimal("3")]


@responses.activate
def test_an_empty_month_has_its_start_as_horizon() -> None:
    assert openai({**openai_answer(), "data": []}).data_through == MONTH.start


@responses.activate
def test_anthropic_horizon_is_the_start_of_the_open_bucket() -> None:
    # 500 cents yesterday (closed), 125 cents today (still open).
    responses.get(
        f"{ANTHROPIC}/v1/organizations/cost_report",
        json=load_fixture("anthropic", "cost_report_yesterday_and_today"),
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
