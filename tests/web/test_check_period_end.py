"""The check at the very instant a period ends: the old period's figures count up to, and not
including, its end (a window is [start, end))."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tests.support.clock import Clock
from tests.web.test_check_api import call, check, engine_for

END = datetime(2026, 12, 1, tzinfo=UTC).timestamp()  # November's end, December's start


def test_the_old_periods_figures_stop_exactly_at_its_end(make_engine: Any) -> None:
    clock = Clock(END - 30)  # polled half a minute before the month ends: fresh figures
    engine = engine_for(make_engine, clock, "fail_closed")
    clock.now = END - 0.001
    before = check(engine, budget="saas")
    assert before["state"] == "ok" and before["allowed"] is True
    clock.now = END
    at_end = check(engine, budget="saas")
    assert at_end["state"] == "unknown" and at_end["allowed"] is False
    assert "no data yet" in at_end["reason"]
    status, doc = call(engine, "GET", "/api/v1/budgets")
    assert status == 200 and {b["name"]: b["state"] for b in doc["budgets"]}["saas"] == "unknown"
