"""Period arithmetic in UTC: calendar, fiscal, weekly and custom windows."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta

from budget_exporter.core.model import Period, Window


def window_at(period: Period, now: datetime) -> Window:
    """The window of ``period`` that contains ``now`` (which must be timezone-aware).

    A custom range has one window, its days, whether ``now`` is before, in or after it.
    """
    now = now.astimezone(UTC)
    today = now.date()
    kind = period.kind
    if kind == "daily":
        return _window(period, today, today + timedelta(days=1))
    if kind == "weekly":
        start = today - timedelta(days=(today.weekday() - period.first_weekday) % 7)
        return _window(period, start, start + timedelta(days=7))
    if kind == "monthly":
        start = today.replace(day=1)
        return _window(period, start, _add_months(start, 1))
    if kind in ("quarterly", "yearly"):
        length = 3 if kind == "quarterly" else 12
        # Months since the first (fiscal) period start at or before today's month.
        offset = (today.month - period.first_month) % length
        start = _add_months(today.replace(day=1), -offset)
        return _window(period, start, _add_months(start, length))
    days = period.days
    if days is not None:
        return _window(period, days[0], days[1] + timedelta(days=1))
    raise ValueError(f"unknown period {period!r}")


def _window(period: Period, start: date, end: date) -> Window:
    return Window(period, _midnight(start), _midnight(end))


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), UTC)


def _add_months(start: date, months: int) -> date:
    index = start.year * 12 + start.month - 1 + months
    return start.replace(year=index // 12, month=index % 12 + 1)


def next_boundary(periods: Iterable[Period], now: datetime) -> datetime | None:
    """The first instant after ``now`` at which one of ``periods`` changes window (or a
    custom range starts or ends); None when none will (custom ranges already over)."""
    found: list[datetime] = []
    for period in periods:
        window = window_at(period, now)
        found.extend(edge for edge in (window.start, window.end) if edge > now)
    return min(found, default=None)


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


def month_aligned(window: Window) -> bool:
    """Both ends of ``window`` are the first of a month (a month, a quarter, a year,
    fiscal or not, or a custom range of whole months)."""
    return window.start.day == 1 and window.end.day == 1


def supports(supported: Iterable[Period], period: Period) -> bool:
    """Whether a provider with ``supported_periods`` can report ``period``'s spend.

    :attr:`Period.ANY` covers every period but ``daily``, which a provider lists itself:
    a daily window is today, and a source whose figures end before today cannot count it.
    """
    found = frozenset(supported)
    if period in found:
        return True
    return Period.ANY in found and period.kind != "daily"
