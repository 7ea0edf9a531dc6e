from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from budget_exporter.core.durations import format_duration, parse_duration
from budget_exporter.core.model import Period
from budget_exporter.core.periods import elapsed_fraction, forecast_floor_fraction, window_at


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
