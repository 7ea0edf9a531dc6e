from __future__ import annotations

import copy
import pickle
from datetime import UTC, date, datetime, timedelta

import pytest

from budget_exporter.core.durations import format_duration, parse_duration
from budget_exporter.core.model import Period
from budget_exporter.core.periods import (
    elapsed_fraction,
    forecast_floor_fraction,
    next_boundary,
    supports,
    window_at,
)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    "period, now, start, end",
    [
        (Period.DAILY, utc(2026, 2, 28, 23, 59), utc(2026, 2, 28), utc(2026, 3, 1)),
        (Period.MONTHLY, utc(2026, 1, 31, 12), utc(2026, 1, 1), utc(2026, 2, 1)),
        (Period.MONTHLY, utc(2026, 12, 31, 23, 59, 59), utc(2026, 12, 1), utc(2027, 1, 1)),
        (Period.MONTHLY, utc(2028, 2, 29), utc(2028, 2, 1), utc(2028, 3, 1)),
        (Period.MONTHLY, utc(2026, 3, 1), utc(2026, 3, 1), utc(2026, 4, 1)),
        (Period.QUARTERLY, utc(2026, 3, 31, 23), utc(2026, 1, 1), utc(2026, 4, 1)),
        (Period.QUARTERLY, utc(2026, 4, 1), utc(2026, 4, 1), utc(2026, 7, 1)),
        (Period.QUARTERLY, utc(2026, 11, 25), utc(2026, 10, 1), utc(2027, 1, 1)),
        (Period.YEARLY, utc(2026, 7, 4), utc(2026, 1, 1), utc(2027, 1, 1)),
    ],
)
def test_window_at(period: Period, now: datetime, start: datetime, end: datetime) -> None:
    window = window_at(period, now)
    assert (window.start, window.end) == (start, end)
    assert window.start <= now < window.end


@pytest.mark.parametrize(
    "period, now, start, end",
    [
        # ISO weeks start on Monday; 2026 has a week 53 (28 Dec 2026 to 3 Jan 2027).
        (Period.WEEKLY, utc(2026, 12, 31, 12), utc(2026, 12, 28), utc(2027, 1, 4)),
        (Period.WEEKLY, utc(2027, 1, 3, 23, 59), utc(2026, 12, 28), utc(2027, 1, 4)),
        (Period.WEEKLY, utc(2027, 1, 4), utc(2027, 1, 4), utc(2027, 1, 11)),  # week 1 of 2027
        (Period.WEEKLY, utc(2020, 12, 31), utc(2020, 12, 28), utc(2021, 1, 4)),  # 2020-W53
        (Period.WEEKLY, utc(2028, 2, 29, 8), utc(2028, 2, 28), utc(2028, 3, 6)),  # leap day
        (Period("weekly-sunday"), utc(2026, 12, 31), utc(2026, 12, 27), utc(2027, 1, 3)),
        (Period("weekly-sunday"), utc(2027, 1, 3), utc(2027, 1, 3), utc(2027, 1, 10)),
        (Period("weekly-saturday"), utc(2026, 12, 31), utc(2026, 12, 26), utc(2027, 1, 2)),
        # A fiscal year from April; its quarters are the calendar ones.
        (Period("yearly-april"), utc(2026, 3, 31, 23, 59), utc(2025, 4, 1), utc(2026, 4, 1)),
        (Period("yearly-april"), utc(2026, 4, 1), utc(2026, 4, 1), utc(2027, 4, 1)),
        (Period("yearly-april"), utc(2026, 12, 31, 23), utc(2026, 4, 1), utc(2027, 4, 1)),
        (Period("yearly-april"), utc(2028, 2, 29), utc(2027, 4, 1), utc(2028, 4, 1)),
        (Period("yearly-july"), utc(2027, 1, 1), utc(2026, 7, 1), utc(2027, 7, 1)),
        (Period("yearly-december"), utc(2026, 11, 30), utc(2025, 12, 1), utc(2026, 12, 1)),
        # Fiscal quarters from February: Feb-Apr, May-Jul, Aug-Oct, Nov-Jan (over a year end).
        (Period("quarterly-february"), utc(2027, 1, 31, 23), utc(2026, 11, 1), utc(2027, 2, 1)),
        (Period("quarterly-february"), utc(2026, 12, 31), utc(2026, 11, 1), utc(2027, 2, 1)),
        (Period("quarterly-february"), utc(2028, 2, 29), utc(2028, 2, 1), utc(2028, 5, 1)),
        (Period("quarterly-march"), utc(2026, 1, 15), utc(2025, 12, 1), utc(2026, 3, 1)),
        # A custom range: its days, both counted, before, during and after it.
        (Period("2027-12-20/2028-02-29"), utc(2027, 12, 31), utc(2027, 12, 20), utc(2028, 3, 1)),
        (Period("2027-12-20/2028-02-29"), utc(2027, 1, 1), utc(2027, 12, 20), utc(2028, 3, 1)),
        (Period("2027-12-20/2028-02-29"), utc(2029, 1, 1), utc(2027, 12, 20), utc(2028, 3, 1)),
        (Period("2026-05-05/2026-05-05"), utc(2026, 5, 5, 9), utc(2026, 5, 5), utc(2026, 5, 6)),
    ],
)
def test_window_of_weekly_fiscal_and_custom_periods(
    period: Period, now: datetime, start: datetime, end: datetime
) -> None:
    window = window_at(period, now)
    assert (window.period, window.start, window.end) == (period, start, end)


@pytest.mark.parametrize(
    "text, canonical, kind",
    [
        ("weekly-monday", "weekly", "weekly"),
        ("Weekly-Sunday", "weekly-sunday", "weekly"),
        ("quarterly-january", "quarterly", "quarterly"),
        ("quarterly-april", "quarterly", "quarterly"),  # same windows as the calendar
        ("quarterly-november", "quarterly-february", "quarterly"),
        ("yearly-april", "yearly-april", "yearly"),
        ("2026-04-01/2026-09-30", "2026-04-01/2026-09-30", "custom"),
    ],
)
def test_period_names_are_canonical(text: str, canonical: str, kind: str) -> None:
    period = Period(text)
    assert (str(period), period.kind) == (canonical, kind)
    assert period is Period(canonical)  # one object per period


def test_period_parts() -> None:
    assert Period("yearly-april").first_month == 4 and Period.YEARLY.first_month == 1
    assert Period("weekly-sunday").first_weekday == 6 and Period.WEEKLY.first_weekday == 0
    assert Period("2028-02-01/2028-02-29").days == (date(2028, 2, 1), date(2028, 2, 29))
    assert Period.MONTHLY.days is None
    assert Period.QUARTERLY.calendar and not Period("yearly-april").calendar
    assert Period.of("yearly", first_month=7) == "yearly-july"
    assert Period.of("weekly", first_weekday=6) == "weekly-sunday"
    assert Period.of("custom", first_day=date(2026, 1, 1), last_day=date(2026, 1, 31)) == (
        "2026-01-01/2026-01-31"
    )


@pytest.mark.parametrize(
    "text, words",
    [
        ("fortnightly", "unknown period 'fortnightly'"),
        ("weekly-funday", "unknown period"),
        ("any", "unknown period"),  # the marker is not a period
        ("2026-02-30/2026-03-01", "not a range of two valid dates"),
        ("2026-03-02/2026-03-01", "ends before it starts"),
    ],
)
def test_bad_periods_are_refused(text: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        Period(text)


def test_copies_and_pickles_are_the_same_period() -> None:
    for period in (Period("yearly-april"), Period.ANY, Period("2026-01-01/2026-01-31")):
        assert copy.deepcopy(period) is period
        assert pickle.loads(pickle.dumps(period)) is period


def test_any_window_covers_all_but_today_alone() -> None:
    assert supports({Period.MONTHLY, Period.ANY}, Period("2026-01-05/2026-01-09"))
    assert supports({Period.MONTHLY, Period.ANY}, Period("weekly-sunday"))
    assert not supports({Period.MONTHLY, Period.ANY}, Period.DAILY)
    assert supports(set(Period), Period.DAILY)  # every period, today's too
    assert not supports({Period.MONTHLY}, Period.WEEKLY)


def test_next_boundary_never_lies_in_the_past() -> None:
    now = utc(2026, 12, 31, 12)
    assert next_boundary([Period.WEEKLY, Period.MONTHLY], now) == utc(2027, 1, 1)
    assert next_boundary([Period("2027-02-01/2027-02-28")], now) == utc(2027, 2, 1)  # begins
    assert next_boundary([Period("2026-12-01/2027-01-15")], now) == utc(2027, 1, 16)  # ends
    assert next_boundary([Period("2026-01-01/2026-06-30")], now) is None  # over: no boundary
    assert next_boundary([], now) is None


def test_forecast_floor_of_a_week_and_a_fiscal_year() -> None:
    week = window_at(Period.WEEKLY, utc(2026, 12, 31))
    assert forecast_floor_fraction(week) == pytest.approx(1 / 24)  # 7 hours, less than a day
    assert elapsed_fraction(week, utc(2026, 12, 31, 12)) == pytest.approx(3.5 / 7)
    year = window_at(Period("yearly-april"), utc(2028, 2, 29))  # April 2027 to April 2028
    assert forecast_floor_fraction(year) == pytest.approx(1 / 366)


def test_window_uses_utc_for_other_timezones() -> None:
    # 23:30 on Jan 31 in New York is already February in UTC.
    new_york = datetime(2026, 1, 31, 23, 30, tzinfo=UTC) + timedelta(hours=5)
    local = new_york.astimezone(__import__("zoneinfo").ZoneInfo("America/New_York"))
    assert window_at(Period.MONTHLY, local).start == utc(2026, 2, 1)


def test_elapsed_fraction_and_floor() -> None:
    window = window_at(Period.MONTHLY, utc(2026, 4, 16))  # April: 30 days
    assert elapsed_fraction(window, utc(2026, 4, 16)) == pytest.approx(0.5)
    assert elapsed_fraction(window, utc(2026, 3, 1)) == 0.0
    assert elapsed_fraction(window, utc(2026, 5, 2)) == 1.0
    assert forecast_floor_fraction(window) == pytest.approx(1 / 30)
    daily = window_at(Period.DAILY, utc(2026, 4, 16))
    assert forecast_floor_fraction(daily) == pytest.approx(1 / 24)


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("500ms", 0.5),
        ("30s", 30),
        ("5m", 300),
        ("4h", 14400),
        ("1d", 86400),
        ("1h30m", 5400),
        ("1w", 604800),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds
    assert parse_duration(format_duration(parse_duration(text))) == parse_duration(text)


@pytest.mark.parametrize("text", ["", "5", "5x", "h", "-5m", "0s", "1.5h", "5 m"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)
