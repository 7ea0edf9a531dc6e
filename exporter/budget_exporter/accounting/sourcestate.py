"""What the exporter knows about one source: its last good result and health."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Protocol

from budget_exporter.core.model import Period, PollResult, Sample, Window


class ConfiguredSource(Protocol):
    """What the budget arithmetic reads of a configured source (a provider's config
    model has it): its name, and the billed source a meter continues, if any."""

    @property
    def name(self) -> str: ...

    def billed_source(self) -> str | None: ...


@dataclass(frozen=True)
class SourceState:
    """An immutable record; the poller replaces it after every attempt."""

    name: str
    provider: str
    poll_interval_seconds: float
    accrues: bool = True
    """Spend grows through the period (the provider's ``accrues``); False for fixed
    amounts, which are their own forecast."""
    result: PollResult | None = None
    windows: tuple[Window, ...] = ()
    """The windows ``result`` was polled for."""
    up: bool = False
    attempted: bool = False
    last_attempt: float | None = None
    last_success: float | None = None
    recorded_at: float | None = None
    """When the last good result was recorded (its poll's end; ``last_success`` is its
    start): a meter whose poll started before this read the previous horizon."""
    duration: float | None = None
    last_error: str | None = None
    requests: Counter[str] = field(default_factory=Counter)
    earlier: tuple[tuple[PollResult, tuple[Window, ...]], ...] = ()
    """Earlier good results of a billed source with other data horizons, newest first
    (a few), with their windows: a meter polled against an older horizon is joined
    to the bill of that horizon while it is up and has not polled since (see
    :mod:`budget_exporter.accounting.nowcast`)."""

    def window(self, period: Period) -> Window | None:
        return next((w for w in self.windows if w.period == period), None)

    def result_through(self, horizon: datetime, window: Window) -> PollResult | None:
        """The current or an earlier good result for ``window`` whose data horizon is
        ``horizon``, if one is kept."""
        candidates = ((self.result, self.windows), *self.earlier)
        for result, windows in candidates:
            if result is not None and result.data_through == horizon and window in windows:
                return result
        return None

    def success_of(self, period: Period) -> float | None:
        """When the figures served for ``period`` were polled (the poll's start): the
        source's last success, or, for a window that failed alone since, the last poll that
        answered it (None: it has no figures)."""
        if self.result is not None:
            for failed in self.result.failed_windows:
                if failed.period == period:
                    return failed.last_success
        return self.last_success

    @property
    def oldest_success(self) -> float | None:
        """The start of the oldest poll whose figures are served: :attr:`last_success`, or
        a window's that failed alone since and keeps older figures."""
        if self.last_success is None or self.result is None:
            return self.last_success
        kept = [f.last_success for f in self.result.failed_windows if f.last_success is not None]
        return min([self.last_success, *kept])

    def with_(self, **changes: object) -> SourceState:
        return replace(self, **changes)  # type: ignore[arg-type]


def keep_failed_windows(
    state: SourceState, result: PollResult, windows: tuple[Window, ...]
) -> tuple[PollResult, tuple[Window, ...]]:
    """``result``, a poll some of whose windows failed alone, with ``state``'s figures of
    those windows put back, and the windows they now cover.

    A failed window keeps its previous lines, samples, forecasts and provider budgets only
    if they are of the same window (last month's figures are never this month's) and, for a
    meter, metered from the same horizon (else they would overlap the bill); its
    :class:`~budget_exporter.core.model.FailedWindow` then says when they were polled.  A
    failed window without such figures is left out of the windows returned: its budgets
    have no data, as before a source's first poll.
    """
    before = state.result
    marked = []
    kept: set[Period] = set()
    for failed in result.failed_windows:
        window = next((w for w in windows if w.period == failed.period), None)
        since = state.success_of(failed.period)
        usable = (
            before is not None
            and window is not None
            and since is not None
            and state.window(failed.period) == window
            and before.metered_from == result.metered_from
        )
        if usable:
            kept.add(failed.period)
        marked.append(replace(failed, last_success=since if usable else None))
    merged = replace(result, failed_windows=tuple(marked))
    if before is not None and kept:
        merged = replace(
            merged,
            lines=result.lines + tuple(x for x in before.lines if x.period in kept),
            unsettled=result.unsettled + tuple(x for x in before.unsettled if x.period in kept),
            forecasts=result.forecasts + tuple(x for x in before.forecasts if x.period in kept),
            budgets=result.budgets + tuple(x for x in before.budgets if x.period in kept),
            samples=result.samples + tuple(x for x in before.samples if _period_of(x) in kept),
        )
    dropped = {f.period for f in result.failed_windows} - kept
    return merged, tuple(w for w in windows if w.period not in dropped)


def _period_of(sample: Sample) -> str | None:
    """The ``period`` label of a provider's sample, if it has one."""
    return next((value for name, value in sample.labels if name == "period"), None)
