"""At start-up a meter joined to a bill waits for the bill's first horizon (issue 19, item
10): polled before it, the meter would query the whole period and then again at once."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal

from budget_exporter.core.model import Period, PollResult, SpendLine, Window
from tests.conftest import Clock

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)
H0 = datetime(2026, 11, 20, tzinfo=UTC)
CONFIG = """
global: {poll_interval: 1h, poll_workers: 4, timeout: 1s, retries: 0}
sources:
  - {name: bill, provider: http_json, url: "http://127.0.0.1:9/costs", amount: total,
     currency: USD, data_through: through}
  - {name: meter, provider: prometheus, url: "http://127.0.0.1:9", currency: USD,
     metered_after: bill, query: "sum(increase(spend_total[{range}]))"}
budgets:
  - {name: llm, limit: 1000, currency: USD, sources: [bill, meter]}
"""


def test_the_meter_first_polls_against_the_bills_horizon(make_engine) -> None:
    engine = make_engine(CONFIG, clock=Clock(NOW.timestamp()))
    seen: list[datetime | None] = []
    polled = threading.Event()

    def slow_bill(windows: Sequence[Window]) -> PollResult:
        time.sleep(0.3)  # the bill's API answers after the meter could have been polled
        line = SpendLine.of(Period.MONTHLY, Decimal(400), "USD")
        return PollResult(lines=(line,), data_through=H0)

    def meter(windows: Sequence[Window]) -> PollResult:
        horizon = engine.runners["meter"]._context.horizon()
        seen.append(horizon)
        polled.set()
        return PollResult(metered_from=horizon, metered=True)

    engine.runners["bill"].provider.poll = slow_bill  # type: ignore[method-assign]
    engine.runners["meter"].provider.poll = meter  # type: ignore[method-assign]
    engine.start()
    assert polled.wait(5), "the meter was never polled"
    assert seen == [H0]  # its first poll already had the horizon: no whole-month query


def test_a_meter_waits_at_most_as_long_as_its_bills_first_poll(make_engine) -> None:
    engine = make_engine(CONFIG, clock=Clock(NOW.timestamp()))
    assert engine._first_delay(engine.runners["meter"]) == 1.0 * 1 + 5.0  # its bill's poll
    assert engine._first_delay(engine.runners["bill"]) == 0.0
