"""The first seconds of a new period for a budget counting a bill and a meter joined to it
(issue 19, item 9): no figure from the old period leaks in, no figure is shown before the
bill has answered for the new period, and the meter counts from the new period's start.

The bill and the meter are the fakes of test_nowcast: the bill answers settled spend through
its horizon, the meter RATE dollars a second from the horizon (or the window start) to now.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from budget_exporter.core.model import PollResult, Window
from budget_exporter.web.api import budgets_document
from tests.accounting.test_nowcast import CONFIG, RATE, Bill, Meter
from tests.conftest import Clock

NOVEMBER_30 = datetime(2026, 11, 30, tzinfo=UTC)
DECEMBER_1 = datetime(2026, 12, 1, tzinfo=UTC)


def llm(engine, now: datetime) -> dict:
    document = budgets_document(engine.snapshot, now.timestamp())
    return next(b for b in document["budgets"] if b["name"] == "llm")


def test_a_new_month_starts_from_zero_with_the_meter_from_its_first_second(make_engine) -> None:
    clock = Clock(datetime(2026, 11, 30, 23, 59, 50, tzinfo=UTC).timestamp())
    engine = make_engine(CONFIG, clock=clock)
    bill, meter = Bill(400, NOVEMBER_30, unsettled=70), Meter(engine)
    up = {"bill": True}

    def bill_poll(windows: Sequence[Window]) -> PollResult:
        if not up["bill"]:
            raise ConnectionError("the billing API is down")
        return bill.poll(windows)

    engine.runners["bill"].provider.poll = bill_poll  # type: ignore[method-assign]
    engine.runners["meter"].provider.poll = meter.poll  # type: ignore[method-assign]
    assert engine.runners["bill"].poll() and engine.runners["meter"].poll()
    november = engine.snapshot.budget("llm")
    assert november is not None and november.spend == 400 + RATE * 86390

    # 00:00:06 on the 1st: the meter polls (its schedule stops at the boundary), the bill's
    # poll fails. November's figures are not December's: the budget has none yet.
    clock.now = DECEMBER_1.timestamp() + 6
    assert engine.runners["meter"].poll()
    up["bill"] = False
    assert not engine.runners["bill"].poll()
    assert engine.snapshot.budget("llm") is None
    assert llm(engine, DECEMBER_1)["state"] == "unknown"

    # 00:00:08: the bill answers for December (nothing yet, horizon the 1st, 00:00). Until
    # the meter is polled against that horizon, the bill alone counts: never a November
    # figure, never the meter's six seconds twice.
    clock.now = DECEMBER_1.timestamp() + 8
    up["bill"] = True
    bill.settled, bill.horizon, bill.unsettled = 0, DECEMBER_1, 0
    assert engine.runners["bill"].poll()
    view = engine.snapshot.budget("llm")
    assert view is not None and view.window.start == DECEMBER_1
    assert view.spend == 0 and view.parts[0].meters_left_out == ("meter",)

    # 00:00:09: the meter, polled again at once, counts December from its first second.
    clock.now = DECEMBER_1.timestamp() + 9
    assert engine.runners["meter"].poll()
    view = engine.snapshot.budget("llm")
    assert view is not None
    assert (view.billed, view.metered) == (0, RATE * 9)
    assert view.parts[0].data_through == DECEMBER_1 and view.parts[0].blind is None
