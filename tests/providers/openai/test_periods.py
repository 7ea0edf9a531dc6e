"""Budgets of every period over ``openai`` (issue 21): one Costs API range per poll, from the
earliest window's start, split into lines per window.

The answers are recorded in ``fixtures/``: ``costs_iso_week_53_page*`` (ISO week 53 of 2026,
28 December to 3 January, in pages of three buckets), ``costs_fiscal_april_page*`` (1 April to
3 May 2026, 31 buckets a page), ``costs_custom_ranges`` (26 October to 25 November 2026).
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import responses
from pydantic import ValidationError

from budget_exporter.config.loader import load_config
from budget_exporter.core.model import Period, PollResult, SpendLine, Window
from budget_exporter.core.periods import window_at
from tests.support import llm
from tests.support.fake_upstream import FakeUpstream, Reply
from tests.support.fixtures import load_fixture, shifted
from tests.support.llm import make_provider

BASE = "https://api.openai.test/v1"
COSTS = f"{BASE}/organization/costs"
KEY = "sk-admin-test-0123456789abcdef"
BAD_PAGE = {"error": {"message": "bad page"}}
IN, OUT = "gpt-4o-2024-08-06, input", "gpt-4o-2024-08-06, output"
WEB = "web search tool calls"


def at(moment: datetime, **fields: Any) -> Any:
    """An ``openai`` provider whose clock reads ``moment``."""
    provider = make_provider("openai", admin_key=KEY, base_url=BASE, **fields)
    provider.context = dataclasses.replace(provider.context, now=lambda: moment)
    return provider


def windows(moment: datetime, *periods: str) -> list[Window]:
    return [window_at(Period(p), moment) for p in periods]


def by_period(lines: tuple[SpendLine, ...]) -> dict[str, dict[tuple[str, ...], Decimal]]:
    """``{period: {(project, line item): amount}}``."""
    found: dict[str, dict[tuple[str, ...], Decimal]] = {}
    for line in lines:
        dims = line.dims
        key = tuple(dims[k] for k in ("sub_account_id", "charge_category") if k in dims)
        assert line.currency == "USD"
        assert key not in found.setdefault(str(line.period), {}), "one line per dimensions"
        found[str(line.period)][key] = line.amount
    return found


def totals(lines: tuple[SpendLine, ...]) -> dict[str, Decimal]:
    found: dict[str, Decimal] = {}
    for line in lines:
        found[str(line.period)] = found.get(str(line.period), Decimal(0)) + line.amount
    return found


def query(call: Any) -> dict[str, list[str]]:
    return parse_qs(urlsplit(call.request.url).query)


def unix(moment: datetime) -> str:
    return str(int(moment.timestamp()))


# Saturday 2 January 2027, noon: ISO week 53 of 2026 runs from Monday 28 December.
NEW_YEAR = datetime(2027, 1, 2, 12, tzinfo=UTC)
WEEK_53 = datetime(2026, 12, 28, tzinfo=UTC)
JAN_2 = datetime(2027, 1, 2, tzinfo=UTC)


@responses.activate
def test_a_week_across_the_year_end_and_the_month_daily_and_year_in_one_paged_range() -> None:
    pages = {
        None: load_fixture("openai", "costs_iso_week_53_page1"),
        "page_W53_2": load_fixture("openai", "costs_iso_week_53_page2"),
    }
    responses.add_callback(responses.GET, COSTS, callback=llm.paged(pages, BAD_PAGE))
    asked = windows(NEW_YEAR, "weekly", "monthly", "daily", "yearly")
    assert asked[0] == Window(Period.WEEKLY, WEEK_53, WEEK_53 + timedelta(days=7))

    result = at(NEW_YEAR, page_size=3).poll(asked)

    # One range from the week's start (the earliest window), its two pages followed.
    assert len(responses.calls) == 2
    first, second = (query(c) for c in responses.calls)
    assert first == {
        "start_time": [unix(WEEK_53)],
        "bucket_width": ["1d"],
        "limit": ["3"],
        "group_by": ["project_id", "line_item"],
    }
    assert second == {**first, "page": ["page_W53_2"]}
    new_year = {("proj_a", IN): Decimal("0.95"), ("proj_b", WEB): Decimal("0.25")}
    assert by_period(result.lines) == {
        "weekly": {
            ("proj_a", IN): Decimal("10.30"),  # 4.25 + 3.10 + 2.00 + 0.65 + 0.30
            ("proj_a", OUT): Decimal("7.35"),
            ("proj_b", WEB): Decimal("1.75"),  # 1.50 + 0.25
        },
        "monthly": new_year,  # 1 and 2 January only
        "yearly": new_year,
        "daily": {("proj_a", IN): Decimal("0.30"), ("proj_b", WEB): Decimal("0.25")},
    }
    # Today's bucket is open: the horizon is its start, and its spend is unsettled in every
    # window (yesterday closed twelve hours ago, longer than the default settle_lag).
    assert result.data_through == JAN_2
    today = {("proj_a", IN): Decimal("0.30"), ("proj_b", WEB): Decimal("0.25")}
    assert by_period(result.unsettled) == {
        p: today for p in ("weekly", "monthly", "daily", "yearly")
    }


@responses.activate
def test_early_in_the_day_yesterday_is_still_unsettled_in_each_window() -> None:
    pages = {
        None: load_fixture("openai", "costs_iso_week_53_page1"),
        "page_W53_2": load_fixture("openai", "costs_iso_week_53_page2"),
    }
    responses.add_callback(responses.GET, COSTS, callback=llm.paged(pages, BAD_PAGE))
    early = JAN_2 + timedelta(hours=3)  # 1 January closed three hours ago: still filling
    result = at(early, page_size=3).poll(windows(early, "weekly", "monthly", "daily"))
    assert result.data_through == datetime(2027, 1, 1, tzinfo=UTC)
    assert totals(result.unsettled) == {
        "weekly": Decimal("1.20"),  # 0.65 on 1 January + 0.55 today
        "monthly": Decimal("1.20"),
        "daily": Decimal("0.55"),  # the daily window is today only
    }
    assert totals(result.lines)["weekly"] == Decimal("19.40")


# Sunday 3 May 2026, noon, with the fiscal year from April.
MAY_3 = datetime(2026, 5, 3, 12, tzinfo=UTC)
APRIL_1 = datetime(2026, 4, 1, tzinfo=UTC)


@responses.activate
def test_a_fiscal_quarter_and_year_from_april_with_a_week_across_the_month_end() -> None:
    pages = {
        None: load_fixture("openai", "costs_fiscal_april_page1"),
        "page_FY2": load_fixture("openai", "costs_fiscal_april_page2"),
    }
    responses.add_callback(responses.GET, COSTS, callback=llm.paged(pages, BAD_PAGE))
    quarter = Period.of("quarterly", first_month=4)  # April starts a calendar quarter too
    year = Period.of("yearly", first_month=4)
    asked = [window_at(p, MAY_3) for p in (Period.MONTHLY, quarter, year, Period.WEEKLY)]
    assert (str(quarter), str(year)) == ("quarterly", "yearly-april")
    assert asked[1].start == asked[2].start == APRIL_1
    assert asked[2].end == datetime(2027, 4, 1, tzinfo=UTC)

    result = at(MAY_3).poll(asked)

    assert [query(c).get("start_time") for c in responses.calls] == [[unix(APRIL_1)]] * 2
    assert query(responses.calls[1])["page"] == ["page_FY2"]
    assert totals(result.lines) == {
        "quarterly": Decimal("130.49"),  # 100.10 + 20 + 5.55 + 3.33 + 1.11 + 0.40
        "yearly-april": Decimal("130.49"),
        "monthly": Decimal("4.84"),  # 3.33 + 1.11 + 0.40
        "weekly": Decimal("30.39"),  # 27 April to 3 May: 20 + 5.55 + 3.33 + 1.11 + 0.40
    }
    assert {ln.dims["sub_account_id"] for ln in result.lines} == {"proj_a"}
    assert result.data_through == datetime(2026, 5, 3, tzinfo=UTC)
    assert totals(result.unsettled) == {p: Decimal("0.40") for p in totals(result.lines)}


# Wednesday 25 November 2026, noon.
NOV_25 = datetime(2026, 11, 25, 12, tzinfo=UTC)
OCT_26 = datetime(2026, 10, 26, tzinfo=UTC)
PAST = "2026-10-26/2026-11-01"
RUNNING = "2026-11-16/2026-12-15"
FUTURE = "2026-12-20/2027-01-10"


@responses.activate
def test_custom_ranges_over_in_progress_and_to_come() -> None:
    responses.add(responses.GET, COSTS, json=load_fixture("openai", "costs_custom_ranges"))
    asked = windows(NOV_25, "monthly", PAST, RUNNING, FUTURE)

    result = at(NOV_25, group_by=[]).poll(asked)

    # One request from the past range's first day; nothing asked for the range to come.
    assert len(responses.calls) == 1
    assert query(responses.calls[0]) == {
        "start_time": [unix(OCT_26)],
        "bucket_width": ["1d"],
        "limit": ["31"],
    }
    assert totals(result.lines) == {
        PAST: Decimal("11.75"),  # 8 + 2.25 + 1.50: its full figures
        "monthly": Decimal("12.85"),  # 1.50 + 4 + 6.10 + 0.90 + 0.35
        RUNNING: Decimal("7.35"),  # 6.10 + 0.90 + 0.35
    }
    assert all(ln.dims == {} for ln in result.lines)
    assert result.data_through == datetime(2026, 11, 25, tzinfo=UTC)
    # Today's bucket is open; the range that is over has nothing unsettled.
    assert totals(result.unsettled) == {"monthly": Decimal("0.35"), RUNNING: Decimal("0.35")}


@responses.activate
def test_a_range_already_over_is_asked_up_to_its_end_only() -> None:
    document = load_fixture("openai", "costs_custom_ranges")
    # The API answers the buckets before end_time only.
    end = datetime(2026, 11, 2, tzinfo=UTC)
    document["data"] = [b for b in document["data"] if b["start_time"] < end.timestamp()]
    responses.add(responses.GET, COSTS, json=document)

    result = at(NOV_25).poll(windows(NOV_25, PAST))

    assert query(responses.calls[0])["start_time"] == [unix(OCT_26)]
    assert query(responses.calls[0])["end_time"] == [unix(end)]
    assert [(str(ln.period), ln.amount) for ln in result.lines] == [(PAST, Decimal("11.75"))]
    assert result.unsettled == ()
    assert result.data_through == end  # every bucket of it has settled


@responses.activate
def test_a_window_yet_to_start_asks_nothing_and_has_no_lines() -> None:
    assert at(NOV_25).poll(windows(NOV_25, FUTURE)) == PollResult()
    assert len(responses.calls) == 0


@responses.activate
def test_a_daily_budget_counts_today_only() -> None:
    # 10 USD yesterday (closed at midnight), 2.5 USD today (open).
    responses.add(responses.GET, COSTS, json=load_fixture("openai", "costs_yesterday_and_today"))
    now = llm.NOW
    today = datetime(now.year, now.month, now.day, tzinfo=UTC)

    result = at(now).poll(windows(now, "daily"))

    assert query(responses.calls[0])["start_time"] == [unix(today)]
    assert "end_time" not in query(responses.calls[0])
    assert [(ln.period, ln.amount) for ln in result.lines] == [(Period.DAILY, Decimal("2.5"))]
    assert [(ln.period, ln.amount) for ln in result.unsettled] == [(Period.DAILY, Decimal("2.5"))]
    assert result.data_through == today


@responses.activate
def test_token_usage_stays_monthly_when_other_periods_are_polled() -> None:
    usage = f"{BASE}/organization/usage/completions"
    pages = {
        None: load_fixture("openai", "costs_fiscal_april_page1"),
        "page_FY2": load_fixture("openai", "costs_fiscal_april_page2"),
    }
    responses.add_callback(responses.GET, COSTS, callback=llm.paged(pages, BAD_PAGE))
    month_start = datetime(2026, 5, 1, tzinfo=UTC)
    # 1000 input and 10 output tokens of gpt-4o on 1 November, moved to 1 May.
    recorded = load_fixture("openai", "usage_one_model")
    responses.add(responses.GET, usage, json=shifted(recorded, month_start - llm.MONTH.start))
    provider = at(MAY_3, usage_tokens=True)

    result = provider.poll(windows(MAY_3, "yearly-april", "monthly"))

    assert [c.request.url.split("?")[0] for c in responses.calls] == [COSTS, COSTS, usage]
    assert query(responses.calls[2])["start_time"] == [unix(month_start)]
    tokens = {
        dict(s.labels)["token_type"]: s.value
        for s in result.samples
        if s.name == "budget_source_usage_tokens"
    }
    assert tokens == {"input": 1000, "cached_input": 0, "output": 10}
    assert provider._usage is not None and provider._usage[0] == month_start
    assert totals(result.lines) == {"yearly-april": Decimal("130.49"), "monthly": Decimal("4.84")}


def test_a_weekly_budget_over_openai_loads(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text(
        f"""
sources:
  - {{name: openai, provider: openai, admin_key: {KEY}}}
budgets:
  - {{name: sprint, limit: 100, currency: USD, period: weekly, week_start: sunday}}
  - {{name: today, limit: 10, currency: USD, period: daily}}
  - {{name: fy, limit: 9000, currency: USD, period: yearly, fiscal_year_start: april}}
  - {{name: grant, limit: 500, currency: USD, start: 2026-10-26, end: 2026-11-01}}
"""
    )
    config = load_config(path, env={})
    assert config.periods(config.sources[0]) == {
        Period.MONTHLY,
        Period("weekly-sunday"),
        Period.DAILY,
        Period("yearly-april"),
        Period(PAST),
    }


@responses.activate
def test_a_long_window_reads_fewer_pages_with_the_costs_api_largest_limit() -> None:
    # The fiscal year's 33 days so far on one page of up to 180 buckets.
    document = load_fixture("openai", "costs_fiscal_april_page1")
    document["data"] += load_fixture("openai", "costs_fiscal_april_page2")["data"]
    document.update(has_more=False, next_page=None)
    responses.add(responses.GET, COSTS, json=document)
    usage = f"{BASE}/organization/usage/completions"
    responses.add(responses.GET, usage, json=load_fixture("openai", "usage_one_model"))

    result = at(MAY_3, page_size=180, usage_tokens=True).poll(windows(MAY_3, "yearly-april"))

    assert [query(c)["limit"] for c in responses.calls] == [["180"]]
    assert totals(result.lines) == {"yearly-april": Decimal("130.49")}
    # Without a monthly window no usage is asked; with one, its pages hold at most 31 days.
    at(MAY_3, page_size=180, usage_tokens=True).poll(windows(MAY_3, "monthly"))
    assert [query(c)["limit"] for c in responses.calls[1:]] == [["180"], ["31"]]


def test_page_size_is_bounded_by_the_costs_api_limit() -> None:
    assert make_provider("openai", admin_key=KEY, page_size=180).config.page_size == 180
    with pytest.raises(ValidationError, match="page_size"):
        make_provider("openai", admin_key=KEY, page_size=181)
    with pytest.raises(ValidationError, match="page_size"):
        make_provider("anthropic", admin_key=KEY, page_size=32)  # the cost report's limit


def test_whole_exporter_with_a_weekly_and_a_monthly_budget(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    # Week 53's six recorded days moved to the six days ending today (real time); today's
    # bucket is the open one, as on 2 January.
    now = datetime.now(UTC)
    today = datetime(now.year, now.month, now.day, tzinfo=UTC)
    week, month = windows(now, "weekly", "monthly")
    by = today - JAN_2
    upstream.reply(
        Reply(json=shifted(load_fixture("openai", "costs_iso_week_53_page1"), by)),
        Reply(json=shifted(load_fixture("openai", "costs_iso_week_53_page2"), by)),
    )
    # The recorded days' totals, 28 December to 2 January.
    daily = ["5.75", "3.10", "0", "9.35", "0.65", "0.55"]
    days = {WEEK_53 + by + timedelta(days=n): Decimal(amount) for n, amount in enumerate(daily)}

    def spent(window: Window) -> float:
        return float(
            sum((a for d, a in days.items() if window.start <= d < window.end), Decimal(0))
        )

    config = tmp_path / "openai.yml"
    config.write_text(
        f"""
global: {{retries: 0}}
sources:
  - {{name: openai, provider: openai, admin_key: {KEY}, base_url: '{upstream.url}/v1', page_size: 3}}
budgets:
  - {{name: sprint, limit: 100, currency: USD, period: weekly, sources: [openai]}}
  - {{name: month, limit: 500, currency: USD, sources: [openai]}}
"""
    )
    _, metrics = llm.run_once_checked(config, secret=KEY)

    assert llm.value(metrics, "budget_spend_amount", budget="sprint") == pytest.approx(spent(week))
    assert llm.value(metrics, "budget_spend_amount", budget="month") == pytest.approx(spent(month))
    assert spent(week) >= 0.55 and spent(month) >= 0.55  # today counts in both
    periods = {
        dict(labels)["period"] for labels in llm.samples(metrics, "budget_source_cost_amount")
    }
    assert periods == {"weekly", "monthly"}
    # One range for both budgets: from the earlier start, its two pages.
    start = str(int(min(week.start, month.start).timestamp()))
    assert [(s.query.get("start_time"), s.query.get("page")) for s in upstream.seen] == [
        (start, None),
        (start, "page_W53_2"),
    ]
