"""``settle_lag`` of the LLM bills (issue 19, item 3): a daily bucket that closed less than
``settle_lag`` ago is still filling, so it stays unsettled and the data horizon stays at its
start; a meter joined with ``metered_after`` keeps counting that day meanwhile.

The answers are the recorded ``costs_yesterday_and_today`` (OpenAI) and
``cost_report_yesterday_and_today`` (Anthropic): yesterday's bucket closed at midnight,
today's still open.  The poll runs at 03:00 (yesterday closed three hours ago) or 07:00.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import responses
from pydantic import ValidationError

from tests.support.fixtures import load_fixture
from tests.support.llm import MONTH, NOW, make_provider

OPENAI = "https://api.openai.test/v1"
ANTHROPIC = "https://api.anthropic.test"
TODAY = datetime(NOW.year, NOW.month, NOW.day, tzinfo=UTC)
YESTERDAY = TODAY - timedelta(days=1)


def polled_at(provider: Any, hour: int) -> Any:
    moment = TODAY + timedelta(hours=hour)
    provider.context = dataclasses.replace(provider.context, now=lambda: moment)
    return provider.poll([MONTH])


def openai(**fields: Any) -> Any:
    responses.get(
        f"{OPENAI}/organization/costs", json=load_fixture("openai", "costs_yesterday_and_today")
    )
    return make_provider("openai", admin_key="sk-admin-x", base_url=OPENAI, **fields)


def anthropic(**fields: Any) -> Any:
    responses.get(
        f"{ANTHROPIC}/v1/organizations/cost_report",
        json=load_fixture("anthropic", "cost_report_yesterday_and_today"),
    )
    return make_provider("anthropic", admin_key="sk-ant-admin-x", base_url=ANTHROPIC, **fields)


def total(lines: Any) -> Decimal:
    return sum((ln.amount for ln in lines), Decimal(0))


def test_the_default_is_six_hours() -> None:
    for name, key in (("openai", "sk-admin-x"), ("anthropic", "sk-ant-admin-x")):
        assert make_provider(name, admin_key=key).config.settle_lag == timedelta(hours=6)


@responses.activate
def test_yesterday_is_unsettled_until_the_lag_has_passed() -> None:
    early = polled_at(openai(), 3)
    assert early.data_through == YESTERDAY
    assert total(early.unsettled) == total(early.lines) == Decimal("12.5")  # yesterday + today
    later = polled_at(openai(), 7)
    assert later.data_through == TODAY and total(later.unsettled) == Decimal("2.5")


@responses.activate
def test_no_lag_trusts_a_bucket_as_soon_as_it_closes() -> None:
    result = polled_at(openai(settle_lag="0"), 3)
    assert result.data_through == TODAY and total(result.unsettled) == Decimal("2.5")


@responses.activate
def test_anthropic_has_the_same_lag() -> None:
    early = polled_at(anthropic(), 3)
    assert early.data_through == YESTERDAY and total(early.unsettled) == Decimal("6.25")
    custom = polled_at(anthropic(settle_lag="2h"), 3)
    assert custom.data_through == TODAY and total(custom.unsettled) == Decimal("1.25")


@pytest.mark.parametrize("value", ["49h", "3d"])
def test_a_lag_beyond_two_days_is_refused(value: str) -> None:
    with pytest.raises(ValidationError, match="settle_lag must be from 0 to 48h"):
        make_provider("openai", admin_key="sk-admin-x", settle_lag=value)
