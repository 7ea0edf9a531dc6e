"""Calendar period arithmetic in UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from budget_exporter.core.model import Period, Window


def window_at(period: Period, now: datetime) -> Window:
    """The window of ``period`` that contains ``now`` (which must be timezone-aware)."""
    now = now.astimezone(UTC)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period is Period.DAILY:
        return Window(period, day, day + timedelta(days=1))
    if period is Period.MONTHLY:
        start = day.replace(day=1)
        return Window(period, start, _add_months(start, 1))
    if period is Period.QUARTERLY:
        start = day.replace(month=(now.month - 1) // 3 * 3 + 1, day=1)
        return Window(period, start, _add_months(start, 3))
    if period is Period.YEARLY:
        start = day.replace(month=1, day=1)
        return Window(period, start, start.replace(year=start.year + 1))
    raise ValueError(f"unknown period {period!r}")


def _add_months(start: datetime, months: int) -> datetime:
    index = start.month - 1 + months
    return start.replace(year=start.year + index // 12, month=index % 12 + 1)


def elapsed_fraction(window: Window, now: datetime) -> float:
    """How much of ``window`` has passed at ``now``, clamped to [0, 1]."""
    total = (window.end - window.start).total_seconds()
    done = (now - window.start).total_seconds()
    return min(max(done / total, 0.0), 1.0)


def forecast_floor_fraction(window: Window) -> float:
    """The smallest elapsed fraction a linear projection may divide by.

    Early in a period a few hours of spend would project to absurd totals, so
    the projection never assumes less than one day (or, for daily periods, one
    hour) has passed: ``min(1 day, length / 24)`` of the window.
    """
    length = window.end - window.start
    floor = min(timedelta(days=1), length / 24)
    return floor / length
