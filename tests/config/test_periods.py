"""Budget periods in the configuration: weekly, fiscal years and quarters, custom ranges,
the global defaults, and the periods a source cannot report refused at load."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from budget_exporter.config.loader import load_config
from budget_exporter.core.errors import ConfigError
from budget_exporter.core.model import Period
from budget_exporter.core.periods import window_at

STATIC = "{name: a, provider: static, amount: 5, currency: USD}"


def test_fiscal_year_and_week_start_global_and_per_budget(write_config) -> None:
    path = write_config(
        f"""
        global:
          fiscal_year_start: april
          week_start: sunday
        sources: [{STATIC}]
        budgets:
          - {{name: fy, limit: 100, currency: USD, period: yearly}}
          - {{name: fq, limit: 100, currency: USD, period: quarterly, fiscal_year_start: feb}}
          - {{name: calendar-year, limit: 100, currency: USD, period: yearly,
              fiscal_year_start: january}}
          - {{name: week, limit: 100, currency: USD, period: weekly}}
          - {{name: iso-week, limit: 100, currency: USD, period: weekly, week_start: monday}}
          - {{name: month, limit: 100, currency: USD}}
          - {{name: july, limit: 100, currency: USD, period: yearly-july}}
        """
    )
    config = load_config(path, env={})
    periods = {b.name: b.period for b in config.budgets}
    assert periods == {
        "fy": Period("yearly-april"),
        "fq": Period("quarterly-february"),
        "calendar-year": Period.YEARLY,
        "week": Period("weekly-sunday"),
        "iso-week": Period.WEEKLY,
        "month": Period.MONTHLY,
        "july": Period("yearly-july"),  # named in full, kept
    }
    assert config.periods(config.sources[0]) == set(periods.values())
    fiscal = window_at(periods["fy"], datetime(2027, 1, 15, tzinfo=UTC))
    assert (fiscal.start, fiscal.end) == (
        datetime(2026, 4, 1, tzinfo=UTC),
        datetime(2027, 4, 1, tzinfo=UTC),
    )


def test_custom_range_from_start_and_end(write_config) -> None:
    path = write_config(
        f"""
        sources: [{STATIC}]
        budgets:
          - {{name: grant, limit: 5000, currency: USD, period: custom,
              start: 2027-12-20, end: 2028-02-29}}
          - {{name: campaign, limit: 900, currency: USD, start: "2026-06-01", end: "2026-06-30"}}
        """
    )
    grant, campaign = load_config(path, env={}).budgets
    assert grant.period == Period("2027-12-20/2028-02-29")
    assert grant.period.kind == "custom"
    window = window_at(grant.period, datetime(2028, 1, 1, tzinfo=UTC))
    assert (window.start, window.end) == (
        datetime(2027, 12, 20, tzinfo=UTC),
        datetime(2028, 3, 1, tzinfo=UTC),  # the last day counts
    )
    assert campaign.period == Period("2026-06-01/2026-06-30")


BAD = {
    "custom without end": (
        "period: custom, start: 2026-01-01",
        "budgets[0]: a custom period needs both start and end",
    ),
    "end before start": (
        "start: 2026-02-01, end: 2026-01-31",
        "budgets[0]: end (2026-01-31) is before start (2026-02-01)",
    ),
    "start with another period": (
        "period: monthly, start: 2026-01-01, end: 2026-01-31",
        "budgets[0]: start and end make a custom period: set period: custom, not monthly",
    ),
    "bad date": ('start: "2026-02-30", end: 2026-03-31', "start and end must be dates"),
    "fiscal start on a monthly budget": (
        "fiscal_year_start: april",
        "fiscal_year_start applies to quarterly and yearly budgets only",
    ),
    "fiscal start contradicts the period": (
        "period: yearly-july, fiscal_year_start: april",
        "period yearly-july contradicts fiscal_year_start",
    ),
    "week start on a monthly budget": (
        "week_start: sunday",
        "week_start applies to weekly budgets only",
    ),
    "bad month": (
        "period: yearly, fiscal_year_start: smarch",
        "fiscal_year_start: Value error, must be a month name",
    ),
    "unknown period": ("period: fortnightly", "unknown period 'fortnightly'"),
    "time zone": ("timezone: Europe/Paris", "timezone is not supported: every period is in UTC"),
}


@pytest.mark.parametrize("settings, expected", BAD.values(), ids=BAD.keys())
def test_bad_period_settings_are_one_line_errors(write_config, settings, expected) -> None:
    path = write_config(
        f"sources: [{STATIC}]\nbudgets: [{{name: b, limit: 9, currency: USD, {settings}}}]\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    message = str(info.value)
    assert expected.replace("Value error, ", "") in message, message
    assert "\n" not in message


def test_global_time_zone_is_refused(write_config) -> None:
    path = write_config(f"global: {{timezone: UTC}}\nsources: [{STATIC}]\n")
    with pytest.raises(ConfigError, match="global: timezone is not supported"):
        load_config(path, env={})


@pytest.mark.parametrize(
    "provider, period, expected",
    [
        (
            "{name: hunter, provider: hunter, api_key: k, price_per_credit: 0.1, currency: USD}",
            "weekly",
            "budgets[0].period: source 'hunter' (hunter) reports only monthly spend, not weekly: "
            "budget 'b' cannot count it",
        ),
        (
            "{name: http, provider: http_json, url: 'https://x/', amount: a, currency: USD}",
            "yearly-april",
            "source 'http' (http_json) reports only monthly spend, not yearly-april",
        ),
    ],
)
def test_a_period_a_source_cannot_report_is_refused(write_config, provider, period, expected):
    path = write_config(
        f"sources: [{provider}]\nbudgets: [{{name: b, limit: 9, currency: USD, period: {period}}}]\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert expected in str(info.value)


def test_daily_from_cost_explorer_names_what_it_can_report(write_config) -> None:
    pytest.importorskip("boto3")
    path = write_config(
        "sources: [{name: aws, provider: aws_cost_explorer}]\n"
        "budgets: [{name: b, limit: 9, currency: USD, period: daily}]\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert (
        "source 'aws' (aws_cost_explorer) reports only monthly, quarterly, yearly, "
        "other ranges of whole days spend, not daily"
    ) in str(info.value)
