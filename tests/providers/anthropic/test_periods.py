"""Budgets of every period over ``anthropic`` (issue 21): one cost report range per poll,
from the earliest window's start, split into lines per window; amounts in cents.

The answers are recorded in ``fixtures/``: ``cost_report_iso_week_53_page*`` (ISO week 53 of
2026, 28 December to 3 January, in pages of three buckets), ``cost_report_fiscal_april_page*``
(1 April to 3 May 2026, 31 buckets a page), ``cost_report_custom_ranges`` (26 October to
25 November 2026).
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import responses

from budget_exporter.config.loader import load_config
from budget_exporter.core.model import Period, PollResult, SpendLine, Window
from budget_exporter.core.periods import window_at
from tests.support import llm
from tests.support.fixtures import load_fixture
from tests.support.llm import make_provider

BASE = "https://api.anthropic.test"
COSTS = f"{BASE}/v1/organizations/cost_report"
KEY = "sk-ant-admin01-test-abcdefghijklmnop"
BAD_PAGE = {"type": "error", "error": {"type": "invalid_request_error"}}


def at(moment: datetime, **fields: Any) -> Any:
    """An ``anthropic`` provider whose clock reads ``moment``."""
    provider = make_provider("anthropic", admin_key=KEY, base_url=BASE, **fields)
    provider.context = dataclasses.replace(provider.context, now=lambda: moment)
    return provider


def windows(moment: datetime, *periods: str) -> list[Window]:
    return [window_at(Period(p), moment) for p in periods]


def by_period(lines: tuple[SpendLine, ...]) -> dict[str, dict[tuple[str, ...], Decimal]]:
    """``{period: {(workspace, charge category, token type): amount}}``."""
    found: dict[str, dict[tuple[str, ...], Decimal]] = {}
    for line in lines:
        dims = line.dims
        key = tuple(dims.get(k, "") for k in ("sub_account_id", "charge_category", "token_type"))
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


def rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


NEW_YEAR = datetime(2027, 1, 2, 12, tzinfo=UTC)  # Saturday of ISO week 53 of 2026
WEEK_53 = datetime(2026, 12, 28, tzinfo=UTC)
JAN_2 = datetime(2027, 1, 2, tzinfo=UTC)
INPUT = ("wrkspc_01A", "tokens", "input")
OUTPUT = ("wrkspc_01A", "tokens", "output")
SEARCH = ("default", "web_search", "")


@responses.activate
def test_a_week_across_the_year_end_with_the_month_day_and_quarter_in_one_paged_range() -> None:
    pages = {
        None: load_fixture("anthropic", "cost_report_iso_week_53_page1"),
        "page_VzUzLTI=": load_fixture("anthropic", "cost_report_iso_week_53_page2"),
    }
    responses.add_callback(responses.GET, COSTS, callback=llm.paged(pages, BAD_PAGE))
    asked = windows(NEW_YEAR, "weekly", "monthly", "daily", "quarterly")
    assert asked[0] == Window(Period.WEEKLY, WEEK_53, WEEK_53 + timedelta(days=7))

    result = at(NEW_YEAR, page_size=3).poll(asked)

    assert len(responses.calls) == 2
    first, second = (query(c) for c in responses.calls)
    assert first == {
        "starting_at": [rfc3339(WEEK_53)],
        "bucket_width": ["1d"],
        "limit": ["3"],
        "group_by[]": ["workspace_id", "description"],
    }
    assert second == {**first, "page": ["page_VzUzLTI="]}
    new_year = {INPUT: Decimal("0.95"), SEARCH: Decimal("0.25")}  # 65 + 30 cents; 25 cents
    assert by_period(result.lines) == {
        "weekly": {
            INPUT: Decimal("10.305"),  # 425.5 + 310 + 200 + 65 + 30 cents
            OUTPUT: Decimal("7.3525"),
            SEARCH: Decimal("1.75"),
        },
        "monthly": new_year,
        "quarterly": new_year,
        "daily": {INPUT: Decimal("0.30"), SEARCH: Decimal("0.25")},
    }
    assert {ln.dims.get("model") for ln in result.lines} == {"claude-sonnet-4-20250514", None}
    assert result.data_through == JAN_2
    today = {INPUT: Decimal("0.30"), SEARCH: Decimal("0.25")}
    assert by_period(result.unsettled) == {
        p: today for p in ("weekly", "monthly", "daily", "quarterly")
    }


@responses.activate
def test_a_shorter_settle_lag_settles_yesterday_in_every_window() -> None:
    pages = {
        None: load_fixture("anthropic", "cost_report_iso_week_53_page1"),
        "page_VzUzLTI=": load_fixture("anthropic", "cost_report_iso_week_53_page2"),
    }
    responses.add_callback(responses.GET, COSTS, callback=llm.paged(pages, BAD_PAGE))
    early = JAN_2 + timedelta(hours=3)
    asked = windows(early, "weekly", "monthly")

    default_lag = at(early, page_size=3).poll(asked)
    short_lag = at(early, page_size=3, settle_lag="2h").poll(asked)

    assert default_lag.data_through == datetime(2027, 1, 1, tzinfo=UTC)
    assert totals(default_lag.unsettled) == {"weekly": Decimal("1.20"), "monthly": Decimal("1.20")}
    assert short_lag.data_through == JAN_2
    assert totals(short_lag.unsettled) == {"weekly": Decimal("0.55"), "monthly": Decimal("0.55")}
    assert short_lag.lines == default_lag.lines


MAY_3 = datetime(2026, 5, 3, 12, tzinfo=UTC)
APRIL_1 = datetime(2026, 4, 1, tzinfo=UTC)


@responses.activate
def test_a_fiscal_quarter_and_year_from_april() -> None:
    pages = {
        None: load_fixture("anthropic", "cost_report_fiscal_april_page1"),
        "page_RlkyMDI2": load_fixture("anthropic", "cost_report_fiscal_april_page2"),
    }
    responses.add_callback(responses.GET, COSTS, callback=llm.paged(pages, BAD_PAGE))
    quarter = Period.of("quarterly", first_month=4)
    year = Period.of("yearly", first_month=4)
    asked = [window_at(p, MAY_3) for p in (year, Period.MONTHLY, quarter, Period.WEEKLY)]

    result = at(MAY_3).poll(asked)

    assert [query(c)["starting_at"] for c in responses.calls] == [[rfc3339(APRIL_1)]] * 2
    assert all(query(c)["limit"] == ["31"] for c in responses.calls)
    assert totals(result.lines) == {
        "yearly-april": Decimal("130.4975"),  # 10010 + 2000 + 555.5 + 333 + 111 + 40.25 cents
        "quarterly": Decimal("130.4975"),
        "monthly": Decimal("4.8425"),  # 333 + 111 + 40.25 cents
        "weekly": Decimal("30.3975"),  # 27 April to 3 May
    }
    assert result.data_through == datetime(2026, 5, 3, tzinfo=UTC)
    assert totals(result.unsettled) == {p: Decimal("0.4025") for p in totals(result.lines)}


NOV_25 = datetime(2026, 11, 25, 12, tzinfo=UTC)
OCT_26 = datetime(2026, 10, 26, tzinfo=UTC)
PAST = "2026-10-26/2026-11-01"
RUNNING = "2026-11-16/2026-12-15"
FUTURE = "2026-12-20/2027-01-10"


@responses.activate
def test_custom_ranges_over_in_progress_and_to_come() -> None:
    responses.add(responses.GET, COSTS, json=load_fixture("anthropic", "cost_report_custom_ranges"))

    result = at(NOV_25).poll(windows(NOV_25, "monthly", FUTURE, RUNNING, PAST))

    assert len(responses.calls) == 1
    assert query(responses.calls[0])["starting_at"] == [rfc3339(OCT_26)]
    assert "ending_at" not in query(responses.calls[0])
    assert totals(result.lines) == {
        "monthly": Decimal("12.855"),  # 150 + 400 + 610 + 90 + 35.5 cents
        RUNNING: Decimal("7.355"),  # 610 + 90 + 35.5 cents
        PAST: Decimal("11.75"),  # 800 + 225 + 150 cents
    }
    assert {ln.dims["sub_account_id"] for ln in result.lines} == {"default"}
    assert result.data_through == datetime(2026, 11, 25, tzinfo=UTC)
    assert totals(result.unsettled) == {"monthly": Decimal("0.355"), RUNNING: Decimal("0.355")}


@responses.activate
def test_a_range_already_over_is_asked_up_to_its_end_only() -> None:
    document = load_fixture("anthropic", "cost_report_custom_ranges")
    end = datetime(2026, 11, 2, tzinfo=UTC)
    document["data"] = [b for b in document["data"] if b["starting_at"] < rfc3339(end)]
    responses.add(responses.GET, COSTS, json=document)

    result = at(NOV_25).poll(windows(NOV_25, PAST))

    sent = query(responses.calls[0])
    assert (sent["starting_at"], sent["ending_at"]) == ([rfc3339(OCT_26)], [rfc3339(end)])
    assert [(str(ln.period), ln.amount) for ln in result.lines] == [(PAST, Decimal("11.75"))]
    assert result.unsettled == () and result.data_through == end


@responses.activate
def test_a_window_yet_to_start_asks_nothing() -> None:
    assert at(NOV_25).poll(windows(NOV_25, FUTURE)) == PollResult()
    assert len(responses.calls) == 0


@responses.activate
def test_a_daily_budget_counts_today_only() -> None:
    # 5 USD yesterday, 1.25 USD today (500 and 125 cents).
    responses.add(
        responses.GET, COSTS, json=load_fixture("anthropic", "cost_report_yesterday_and_today")
    )
    today = datetime(llm.NOW.year, llm.NOW.month, llm.NOW.day, tzinfo=UTC)

    result = at(llm.NOW).poll(windows(llm.NOW, "daily"))

    assert query(responses.calls[0])["starting_at"] == [rfc3339(today)]
    assert [(ln.period, ln.amount) for ln in result.lines] == [(Period.DAILY, Decimal("1.25"))]
    assert [(ln.period, ln.amount) for ln in result.unsettled] == [(Period.DAILY, Decimal("1.25"))]
    assert result.data_through == today


def test_budgets_of_every_period_over_anthropic_load(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text(
        f"""
global: {{fiscal_year_start: april}}
sources:
  - {{name: claude, provider: anthropic, admin_key: {KEY}}}
budgets:
  - {{name: week, limit: 100, currency: USD, period: weekly}}
  - {{name: quarter, limit: 900, currency: USD, period: quarterly}}
  - {{name: year, limit: 9000, currency: USD, period: yearly}}
  - {{name: grant, limit: 500, currency: USD, start: 2026-11-16, end: 2026-12-15}}
"""
    )
    config = load_config(path, env={})
    assert config.periods(config.sources[0]) == {
        Period.MONTHLY,
        Period.WEEKLY,
        Period.QUARTERLY,
        Period("yearly-april"),
        Period(RUNNING),
    }
