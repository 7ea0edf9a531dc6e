"""``Meter.declare``: series created at zero before the first spend (issue 19, item 1).

``increase()`` counts what a series gains between scrapes: a series first scraped with spend
already on it loses that spend.  A declared series is scraped at zero first, so its whole
spend counts (the end-to-end test, tests/e2e/test_realtime.py, shows it with a real
Prometheus and a series born in the middle of the meter's range).
"""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from budget_exporter.metering import Meter, TooManyBudgets
from tests.support.llm import app_spend


def test_declared_series_are_exposed_at_zero_before_any_spend() -> None:
    registry = CollectorRegistry()
    meter = Meter(registry)
    assert app_spend(registry) == {}  # a label child exists only once created
    meter.declare("agent", models=("gpt-4o", "gpt-4o-mini"))
    meter.declare("ads", currency="eur")
    assert app_spend(registry) == {
        ("agent", "gpt-4o", "USD"): 0.0,
        ("agent", "gpt-4o-mini", "USD"): 0.0,
        ("ads", "", "EUR"): 0.0,
    }
    meter.record_cost("agent", 50, model="gpt-4o")
    meter.declare("agent", models=("gpt-4o",))  # declaring again changes nothing
    assert app_spend(registry)[("agent", "gpt-4o", "USD")] == 50.0


def test_declarations_are_bounded_like_records() -> None:
    meter = Meter(CollectorRegistry(), max_budgets=1)
    meter.declare("agent")
    with pytest.raises(TooManyBudgets):
        meter.declare("another")
    with pytest.raises(ValueError, match="three-letter code"):
        meter.declare("agent", currency="dollars")
