"""Budgets over weekly, fiscal and custom periods: each counts its own window's lines and
projects over its own length."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from budget_exporter.accounting.budgets import compute_budgets
from budget_exporter.accounting.sourcestate import SourceState
from budget_exporter.config.loader import load_config
from budget_exporter.core.model import Period, PollResult, SpendLine
from budget_exporter.core.periods import window_at

# Thursday 31 December 2026, noon: ISO week 53 of 2026 (28 December to 3 January), the
# fiscal year from April is 9 months old, the grant from 1 December runs to 28 February.
NOW = datetime(2026, 12, 31, 12, tzinfo=UTC)
WEEK = Period.WEEKLY
FISCAL = Period("yearly-april")
GRANT = Period("2026-12-01/2027-02-28")


def state(*lines: SpendLine, now: datetime = NOW) -> SourceState:
    periods = sorted({ln.period for ln in lines})
    return SourceState(
        name="a",
        provider="demo",  # spend that accrues through the period
        poll_interval_seconds=60,
        result=PollResult(lines=lines),
        windows=tuple(window_at(p, now) for p in periods),
        up=True,
        attempted=True,
    )


def line(period: Period, amount: str) -> SpendLine:
    return SpendLine.of(period, Decimal(amount), "USD")


@pytest.fixture
def config(write_config):
    return load_config(
        write_config(
            """
            global: {fiscal_year_start: april}
            sources:
              - {name: a, provider: static, amount: 0, currency: USD}
            budgets:
              - {name: week, limit: 700, currency: USD, period: weekly}
              - {name: fy, limit: 12000, currency: USD, period: yearly}
              - {name: grant, limit: 9000, currency: USD, start: 2026-12-01, end: 2027-02-28}
            """
        ),
        env={},
    )


def test_each_budget_counts_and_projects_over_its_own_window(config) -> None:
    lines = (line(WEEK, "350"), line(FISCAL, "9000"), line(GRANT, "1000"))
    views = {v.name: v for v in compute_budgets(config, {"a": state(*lines)}, NOW)}
    week, fy, grant = views["week"], views["fy"], views["grant"]
    assert (week.period, fy.period, grant.period) == ("weekly", "yearly-april", str(GRANT))
    assert (week.window.start, week.window.end) == (
        datetime(2026, 12, 28, tzinfo=UTC),
        datetime(2027, 1, 4, tzinfo=UTC),
    )
    # 350 after 3.5 of 7 days -> 700
    assert (week.spend, week.forecast) == (Decimal("350"), pytest.approx(Decimal("700")))
    # 9000 after 274.5 of 365 days (1 April to 31 December noon) -> 9000 * 365 / 274.5
    assert fy.forecast == pytest.approx(Decimal(9000) * 365 / Decimal("274.5"))
    # 1000 after 30.5 of 90 days
    assert grant.forecast == pytest.approx(Decimal(1000) * 90 / Decimal("30.5"))
    assert grant.usage_ratio == pytest.approx(1000 / 9000)


def test_a_week_line_counts_for_the_week_only(config) -> None:
    # a source polled only for the week: the fiscal year and the grant have no data yet
    views = {v.name for v in compute_budgets(config, {"a": state(line(WEEK, "5"))}, NOW)}
    assert views == {"week"}


def test_after_a_custom_range_ends_its_forecast_is_its_spend(config) -> None:
    after = datetime(2027, 3, 10, tzinfo=UTC)
    lines = (line(WEEK, "1"), line(FISCAL, "1"), line(GRANT, "8500"))
    views = {v.name: v for v in compute_budgets(config, {"a": state(*lines, now=after)}, after)}
    grant = views["grant"]
    assert (grant.window.start, grant.window.end) == (
        datetime(2026, 12, 1, tzinfo=UTC),
        datetime(2027, 3, 1, tzinfo=UTC),
    )
    assert grant.spend == grant.forecast == Decimal("8500")
