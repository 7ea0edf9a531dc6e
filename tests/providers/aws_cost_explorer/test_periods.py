"""aws_cost_explorer over weekly, fiscal and custom windows: the days each query asks for.

Answers are queued in moto as Cost Explorer sends them (derived in code from the recorded
``month_and_quarter_ungrouped`` with :func:`tests.support.aws_cost_explorer.total`).
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal

from moto import mock_aws

from budget_exporter.core.model import Period
from budget_exporter.core.periods import supports
from budget_exporter.providers.aws_cost_explorer import CostExplorerProvider
from tests.support.aws import offline_aws  # noqa: F401 (autouse fixture)
from tests.support.aws_cost_explorer import Harness, answer, by_dims, queue, sent, total

FISCAL_YEAR = Period("yearly-april")
CUSTOM = Period("2026-06-10/2026-07-19")


def ungrouped(*entries: dict) -> dict:
    page = answer("month_and_quarter_ungrouped")
    page["ResultsByTime"] = list(entries)
    return page


def test_daily_is_refused_and_any_other_window_is_asked_for() -> None:
    supported = CostExplorerProvider.supported_periods
    assert not supports(supported, Period.DAILY)  # today's costs are never in the answer
    for period in (Period.WEEKLY, Period("weekly-sunday"), FISCAL_YEAR, CUSTOM):
        assert supports(supported, period)


def test_each_window_counts_its_own_days() -> None:
    # Friday 21 August 2026: ISO week from Monday 17 August; fiscal year from 1 April.
    with mock_aws():
        queue(
            ungrouped(  # the month and the fiscal year: one query from 1 April
                total("100.00", start="2026-04-01", end="2026-05-01", estimated=False),
                total("200.00", start="2026-05-01", end="2026-06-01", estimated=False),
                total("300.00", start="2026-06-01", end="2026-07-01", estimated=False),
                total("400.00", start="2026-07-01", end="2026-08-01", estimated=False),
                total("120.50", start="2026-08-01", end="2026-08-21", estimated=True),
            ),
            ungrouped(total("35.25", start="2026-08-17", end="2026-08-21", estimated=True)),
            ungrouped(  # 10 June to 19 July, both included
                total("210.00", start="2026-06-10", end="2026-07-01", estimated=False),
                total("190.40", start="2026-07-01", end="2026-07-20", estimated=False),
            ),
        )
        h = Harness(group_by=[])
        result = h.poll(Period.MONTHLY, FISCAL_YEAR, Period.WEEKLY, CUSTOM)
        bodies = sent()
    assert [b["TimePeriod"] for b in bodies] == [
        {"Start": "2026-04-01", "End": "2026-08-21"},
        {"Start": "2026-08-17", "End": "2026-08-21"},
        {"Start": "2026-06-10", "End": "2026-07-20"},  # a range over: its end, not today
    ]
    assert by_dims(result, Period.MONTHLY) == {(): Decimal("120.50")}
    assert by_dims(result, FISCAL_YEAR) == {(): Decimal("1120.50")}
    assert by_dims(result, Period.WEEKLY) == {(): Decimal("35.25")}
    assert by_dims(result, CUSTOM) == {(): Decimal("400.40")}
    assert h.requests == Counter({"ok": 3})


def test_a_range_not_begun_asks_nothing() -> None:
    later = Period("2026-09-01/2026-09-30")
    with mock_aws():
        h = Harness(group_by=[], forecast=True)
        result = h.poll(later)
        assert sent() == []
    assert result.lines == () and result.forecasts == ()
    assert h.requests == Counter()


def test_a_week_from_sunday_starts_on_sunday() -> None:
    with mock_aws():
        queue(ungrouped(total("12.00", start="2026-08-16", end="2026-08-21", estimated=True)))
        result = Harness(group_by=[], now=datetime(2026, 8, 21, 12, tzinfo=UTC)).poll(
            Period("weekly-sunday")
        )
        (body,) = sent()
    assert body["TimePeriod"] == {"Start": "2026-08-16", "End": "2026-08-21"}
    assert by_dims(result, Period("weekly-sunday")) == {(): Decimal("12.00")}
