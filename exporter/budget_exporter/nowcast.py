"""The nowcast: billed spend up to the bill's data horizon, metered spend after it.

A metered source (``prometheus`` with ``metered_after: <billed source>``) is
queried from the billed source's data horizon (``PollResult.data_through``) to
now, and records the horizon it used (``PollResult.metered_from``).  A budget
that sums both counts:

* the bill's lines, less its ``unsettled`` lines (spend it reports at or after
  its horizon, such as a still-open daily bucket), and
* the meter's lines,

taken from a *matching pair*: the meter's result and the billed result with the
same horizon.  Every hour of spend is then counted from one side only.  When a
billed poll moves the horizon, the meter is polled again at once; until it
answers, the budget keeps the previous pair (the state keeps a few earlier
billed results for that), so the spend never counts the moved hours twice nor
drops them.  When the meter answers, the hours between the old and the new
horizon change side: the budget's spend moves by the bill's figure for them
less the meter's.

A meter whose result matches no kept bill (never polled, down across several
horizon moves, or polled before the bill had a horizon) is left out and the
whole bill counts, unsettled part included: spend is then as fresh as the
bill, never double counted.

Pure functions: no I/O, no registry lookups.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from budget_exporter.model import SpendLine, Window
from budget_exporter.state import SourceState

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


def plain_part(state: SourceState, window: Window, total: Total) -> SpendPart:
    """A source without joined meters: all its lines count, on the side it reports."""
    assert state.result is not None
    amount = total(state.result.lines)
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
    current = billed.result
    usable = [
        state
        for _, state in meters
        if state is not None
        and has_data(state, window)
        and state.result is not None
        and state.result.metered_from is not None
    ]
    horizons = {s.result.metered_from for s in usable if s.result is not None}
    # Meters that agree on one horizon use that horizon's bill; meters that disagree
    # (one re-polled after a horizon move, another not yet) use the newest bill.
    horizon = next(iter(horizons)) if len(horizons) == 1 else current.data_through
    bill = billed.result_through(horizon, window) if horizon is not None else None
    matching = [
        s for s in usable if bill is not None and s.result is not None
        and s.result.metered_from == horizon
    ]  # fmt: skip
    names = [name for name, _ in meters]
    if bill is None or not matching:
        return SpendPart(
            billed.name,
            total(current.lines),
            data_through=current.data_through,
            meters_left_out=tuple(names),
        )
    settled = total(bill.lines) - total(bill.unsettled)
    metered = sum((total(s.result.lines) for s in matching if s.result), Decimal(0))
    counted = tuple(s.name for s in matching)
    return SpendPart(
        billed.name,
        settled,
        metered,
        data_through=horizon,
        meters=counted,
        meters_left_out=tuple(n for n in names if n not in counted),
    )
