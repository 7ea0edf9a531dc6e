"""What a source keeps of a window that failed alone (issue 19, item 10): the previous
figures of the same window, metered from the same horizon, with the time they were polled;
never a previous window's, never a previous horizon's."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from budget_exporter.accounting.holds import covered_until
from budget_exporter.accounting.sourcestate import SourceState, keep_failed_windows
from budget_exporter.config.loader import load_config
from budget_exporter.core.model import FailedWindow, Forecast, Period, PollResult, Sample, SpendLine
from budget_exporter.core.periods import window_at

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)
DAY, MONTH = window_at(Period.DAILY, NOW), window_at(Period.MONTHLY, NOW)
T0 = NOW.timestamp() - 600
H0 = datetime(2026, 11, 20, tzinfo=UTC)


def line(period: Period, amount: int) -> SpendLine:
    return SpendLine.of(period, Decimal(amount), "USD", {"model": "gpt-4o"})


def series(period: Period | None, n: int) -> Sample:
    labels = {} if period is None else {"period": str(period)}
    return Sample.of("budget_source_metered_series", "Series.", n, labels)


def polled(
    day: int, month: int | None, horizon: datetime | None = H0, error: str = "HTTP 503"
) -> PollResult:
    """A meter's result: the day's figures, and the month's or its failure."""
    lines = [line(Period.DAILY, day)]
    samples = [series(Period.DAILY, 1), series(None, day)]
    failed: tuple[FailedWindow, ...] = ()
    if month is None:
        failed = (FailedWindow(Period.MONTHLY, error),)
    else:
        lines.append(line(Period.MONTHLY, month))
        samples.append(series(Period.MONTHLY, 3))
    return PollResult(
        lines=tuple(lines),
        samples=tuple(samples),
        forecasts=() if month is None else (Forecast(Period.MONTHLY, Decimal(99), "USD"),),
        metered_from=horizon,
        metered=True,
        failed_windows=failed,
    )


def state(result: PollResult, windows: tuple = (DAY, MONTH), at: float = T0) -> SourceState:
    return SourceState(
        "meter", "prometheus", 60, result=result, windows=windows, last_success=at, up=True
    )


def amounts(result: PollResult) -> dict[Period, Decimal]:
    return {ln.period: ln.amount for ln in result.lines}


def test_the_failed_window_keeps_its_figures_of_the_same_window_and_horizon() -> None:
    merged, windows = keep_failed_windows(state(polled(4, 40)), polled(6, None), (DAY, MONTH))
    assert amounts(merged) == {Period.DAILY: 6, Period.MONTHLY: 40}
    assert windows == (DAY, MONTH)
    assert merged.failed_windows == (FailedWindow(Period.MONTHLY, "HTTP 503", T0),)
    assert merged.forecasts == (Forecast(Period.MONTHLY, Decimal(99), "USD"),)
    # The month's sample is the kept one; those without a period are the new poll's.
    got = sorted((dict(s.labels).get("period", ""), s.value) for s in merged.samples)
    assert got == [("", 6.0), ("daily", 1.0), ("monthly", 3.0)]
    # Failing again: still the figures (and the time) of the poll that answered.
    later = state(merged, at=T0 + 60)
    again, _ = keep_failed_windows(later, polled(7, None), (DAY, MONTH))
    assert amounts(again) == {Period.DAILY: 7, Period.MONTHLY: 40}
    assert later.success_of(Period.MONTHLY) == T0
    assert later.success_of(Period.DAILY) == T0 + 60
    assert later.oldest_success == T0
    assert again.failed_windows[0].last_success == T0


def test_another_window_or_horizon_keeps_nothing() -> None:
    last_month = window_at(Period.MONTHLY, datetime(2026, 10, 31, tzinfo=UTC))
    before = state(polled(4, 40), windows=(DAY, last_month))
    merged, windows = keep_failed_windows(before, polled(6, None), (DAY, MONTH))
    assert amounts(merged) == {Period.DAILY: 6}  # October's 40 is not November's
    assert windows == (DAY,)
    assert merged.failed_windows == (FailedWindow(Period.MONTHLY, "HTTP 503", None),)
    assert state(merged, windows).success_of(Period.MONTHLY) is None
    # The bill's horizon moved: the month metered from the old one would overlap the bill.
    moved = H0 + timedelta(hours=6)
    merged, windows = keep_failed_windows(
        state(polled(4, 40)), polled(6, None, horizon=moved), (DAY, MONTH)
    )
    assert amounts(merged) == {Period.DAILY: 6} and windows == (DAY,)
    # Nothing before: nothing kept.
    empty = SourceState("meter", "prometheus", 60)
    merged, windows = keep_failed_windows(empty, polled(6, None), (DAY, MONTH))
    assert amounts(merged) == {Period.DAILY: 6} and windows == (DAY,)


def test_holds_stay_until_every_window_has_caught_up(
    write_config: Callable[[str], Path],
) -> None:
    config = load_config(
        write_config(
            """
            sources:
              - {name: meter, provider: prometheus, url: "http://127.0.0.1:9", currency: USD,
                 query: "sum(increase(s[{range}]))"}
            budgets:
              - {name: today, period: daily, limit: 10, currency: USD, sources: [meter]}
              - {name: month, limit: 10, currency: USD, sources: [meter]}
            """
        )
    )
    merged, windows = keep_failed_windows(state(polled(4, 40)), polled(6, None), (DAY, MONTH))
    now = T0 + 300
    failing = state(merged, windows, at=now)
    # A cost recorded after T0 is not in the month's figures yet: its hold still counts.
    assert covered_until(config, [failing], 120) == {"meter": T0 - 120}
    assert covered_until(config, [state(polled(6, 41), at=now)], 120) == {"meter": now - 120}
