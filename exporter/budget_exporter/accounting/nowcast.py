"""The nowcast: billed spend up to the bill's data horizon, metered spend after it.

A metered source (``prometheus`` with ``metered_after: <billed source>``) is
queried from the billed source's data horizon (``PollResult.data_through``) to
now, and records the horizon it used (``PollResult.metered_from``).  A budget
that sums both counts:

* the bill's lines, less its ``unsettled`` lines (spend it reports at or after
  its horizon, such as a still-open daily bucket), and
* the meter's lines,

taken from a *matching pair*: every meter joined to the bill was polled against
the same horizon, and the bill of that horizon is kept.  Every hour of spend is
then counted from one side only.  When a billed poll moves the horizon, the meters
are polled again at once; until they answer, the budget keeps the previous pair
(the state keeps a few earlier billed results for that), so the spend never
counts the moved hours twice nor drops them.  When the meters answer, the hours
between the old and the new horizon change side: the budget's spend moves by the
bill's figure for them less the meters'.

An earlier bill is used only while every meter is up and has not been polled
since the bill's last good poll (it is about to catch up).  Otherwise the whole
current bill counts, unsettled part included, and no meter, when: a meter has no
figures for the window; the meters were polled against different horizons (one
caught up, another lagging or down); or their horizon is not the current bill's
and they cannot use an earlier one (a meter is down, or that bill is no longer
kept).  Spend is then as fresh as the bill, never double counted, and never
below the bill alone.  A meter that goes down after it was polled against the
current horizon keeps counting its last good figures, like any source.

Pure functions: no I/O, no registry lookups.
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
    settled = total(bill.lines) - total(bill.unsettled)
    metered = sum((total(s.result.lines) for s in states if s and s.result), Decimal(0))
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
    """The meter is up and has not been polled since the bill's last good poll, so
    its figures are the previous horizon's only because it has not caught up yet."""
    return (
        meter is not None
        and meter.up
        and meter.last_attempt is not None
        and billed.last_success is not None
        and meter.last_attempt <= billed.last_success
    )
