"""What the exporter knows about one source: its last good result and health."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Protocol

from budget_exporter.core.model import Period, PollResult, Window


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

    def with_(self, **changes: object) -> SourceState:
        return replace(self, **changes)  # type: ignore[arg-type]
