"""The nowcast: a bill up to its data horizon plus the meters joined to it after it
(see docs/realtime.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from budget_exporter.accounting.sourcestate import SourceState
from budget_exporter.core.model import PollResult, SpendLine, Window

Total = Callable[[Iterable[SpendLine]], Decimal]
"""Sums the lines a budget counts (its period, match and currency)."""


@dataclass(frozen=True)
class SpendPart:
    """What one source (with the meters joined to it) adds to a budget's spend."""

    source: str
    billed: Decimal
    metered: Decimal = Decimal(0)
    data_through: datetime | None = None
    """The bill's horizon the split is made at (for a joined source), else the
    source's own horizon, if it reports one."""
    meters: tuple[str, ...] = ()
    """The metered sources counted after the horizon."""
    meters_left_out: tuple[str, ...] = ()
    """Meters joined to this source whose figures could not be placed (no data, or
    polled against a horizon no kept bill has): the whole bill counts instead."""
    blind: str | None = None
    """Why the joined meters, though placed, add nothing while the bill's open part (under
    the budget's match) shows spend: ``no_series`` (their queries matched no series) or
    ``no_spend`` (their series add nothing under the budget's ``match``: dimension values
    differ, or the series did not increase).  The bill's open part then counts instead,
    so the budget is never below the bill; None when the meters see the spend."""

    @property
    def amount(self) -> Decimal:
        return self.billed + self.metered


def has_data(state: SourceState | None, window: Window) -> bool:
    return state is not None and state.result is not None and state.window(window.period) == window


def plain_part(state: SourceState, amount: Decimal) -> SpendPart:
    """A source without joined meters, adding ``amount``: metered or billed, as it reports."""
    assert state.result is not None
    if state.result.metered:
        return SpendPart(state.name, Decimal(0), amount)
    return SpendPart(state.name, amount, data_through=state.result.data_through)


def joined_part(
    billed: SourceState,
    meters: Sequence[tuple[str, SourceState | None]],
    window: Window,
    total: Total,
) -> SpendPart:
    """A billed source (with data for ``window``) and the meters joined to it."""
    assert billed.result is not None
    names = tuple(name for name, _ in meters)
    states = [state for _, state in meters]
    bill = _matching_bill(billed, states, window)
    if bill is None:
        current = billed.result
        return SpendPart(
            billed.name,
            total(current.lines),
            data_through=current.data_through,
            meters_left_out=names,
        )
    open_part = total(bill.unsettled)
    metered = sum((total(s.result.lines) for s in states if s and s.result), Decimal(0))
    if open_part > 0 and metered == 0:
        # The bill shows spend after its horizon that no meter counts: subtracting it
        # would drop today's spend without a word.  Count the bill's and say why.
        answered = any(
            line.period == window.period
            for s in states
            if s and s.result
            for line in s.result.lines
        )
        return SpendPart(
            billed.name,
            total(bill.lines),
            data_through=bill.data_through,
            meters=names,
            blind="no_spend" if answered else "no_series",
        )
    settled = total(bill.lines) - open_part
    return SpendPart(billed.name, settled, metered, data_through=bill.data_through, meters=names)


def _matching_bill(
    billed: SourceState, meters: Sequence[SourceState | None], window: Window
) -> PollResult | None:
    """The bill every meter was polled against, if all were polled against one kept
    bill and that bill may still be used; None when the whole current bill counts."""
    horizons = {_metered_from(state, window) for state in meters}
    if len(horizons) != 1:
        return None  # meters polled against different horizons, or one without data
    horizon = horizons.pop()
    if horizon is None:
        return None
    bill = billed.result_through(horizon, window)
    if bill is None or bill is billed.result:
        return bill
    # An earlier bill: only until the meters poll again after the horizon moved.
    if all(_awaits_repoll(state, billed) for state in meters):
        return bill
    return None


def _metered_from(state: SourceState | None, window: Window) -> datetime | None:
    """The horizon ``state``'s result for ``window`` was metered from, if it has one."""
    if state is None or not has_data(state, window) or state.result is None:
        return None
    return state.result.metered_from


def _awaits_repoll(meter: SourceState | None, billed: SourceState) -> bool:
    """The meter is up and its last poll started before the bill's last good result was
    recorded, so its figures are the previous horizon's only because it has not caught up
    yet.  Compared with the time the result was recorded, not its poll's start: a meter
    poll that started while the bill's poll ran read the previous horizon too."""
    recorded = billed.recorded_at if billed.recorded_at is not None else billed.last_success
    return (
        meter is not None
        and meter.up
        and meter.last_attempt is not None
        and recorded is not None
        and meter.last_attempt <= recorded
    )
