"""An LLM bill never reaches past now: a bucket the API says starts in the future (its clock
runs ahead of ours) leaves the horizon at now, so a meter joined to the bill loses nothing."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import responses

from tests.support.fixtures import load_fixture
from tests.support.llm import MONTH, NOW, make_provider

OPENAI = "https://api.openai.test/v1"
ANTHROPIC = "https://api.anthropic.test"
AHEAD = timedelta(hours=3)
"""How far the provider's clock runs ahead: its next day's bucket has already started."""


def unix(seconds: float) -> int:
    return int(seconds)


@responses.activate
def test_openai_horizon_is_capped_at_now() -> None:
    document: dict[str, Any] = load_fixture("openai", "costs_yesterday_and_today")
    today = document["data"][1]
    tomorrow = {
        **today,
        "start_time": unix((NOW + AHEAD).timestamp()),
        "end_time": unix((NOW + AHEAD + timedelta(days=1)).timestamp()),
        "results": [{**today["results"][0], "amount": {"value": "1", "currency": "usd"}}],
    }
    # Today's bucket closed (by the provider's clock) before our now: the newest is the future one.
    today["end_time"] = unix((NOW - timedelta(minutes=5)).timestamp())
    document["data"].append(tomorrow)
    responses.get(f"{OPENAI}/organization/costs", json=document)
    # settle_lag 0: a bucket is final once closed (the lag is tested in openai/test_settle_lag).
    provider = make_provider("openai", admin_key="sk-admin-x", base_url=OPENAI, settle_lag="0")
    result = provider.poll([MONTH])
    assert result.data_through == NOW
    assert sum(ln.amount for ln in result.lines) == Decimal("13.5")
    # The future bucket's spend is open, not settled: the meter counts that time.
    assert [ln.amount for ln in result.unsettled] == [Decimal("1")]


@responses.activate
def test_anthropic_horizon_is_capped_at_now() -> None:
    document: dict[str, Any] = load_fixture("anthropic", "cost_report_yesterday_and_today")
    *_, today = document["data"]
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    tomorrow = {
        **today,
        "starting_at": (NOW + AHEAD).strftime(fmt),
        "ending_at": (NOW + AHEAD + timedelta(days=1)).strftime(fmt),
    }
    today["ending_at"] = (NOW - timedelta(minutes=5)).strftime(fmt)
    document["data"].append(tomorrow)
    responses.get(f"{ANTHROPIC}/v1/organizations/cost_report", json=document)
    provider = make_provider(
        "anthropic", admin_key="sk-ant-admin-x", base_url=ANTHROPIC, settle_lag="0"
    )
    result = provider.poll([MONTH])
    assert result.data_through == NOW
    assert result.unsettled, "the future bucket's spend is open"
