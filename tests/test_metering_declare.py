"""``Meter.declare``: series created at zero before the first spend (issue 19, item 1).

``increase()`` counts what a series gains between scrapes: a series first scraped with spend
already on it loses that spend.  A declared series is scraped at zero first, so its whole
spend counts (the end-to-end test, tests/e2e/test_realtime.py, shows it with a real
Prometheus and a series born in the middle of the meter's range).
"""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from budget_exporter import metering
from budget_exporter.metering import SOURCE_DIMENSIONS, Meter, TooManyBudgets
from tests.support.llm import app_spend, parse_metrics


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


def source_spend(registry: CollectorRegistry) -> dict[tuple[str, ...], float]:
    """The per-source counter in ``registry``: ``{(source, *dimensions, currency): value}``."""
    found = parse_metrics(generate_latest(registry).decode())
    names = ("source", *SOURCE_DIMENSIONS, "currency")
    return {
        tuple(dict(labels)[n] for n in names): value
        for (name, labels), value in found.items()
        if name == "budget_app_source_spend_amount_total"
    }


def test_described_spend_is_declared_at_zero_too() -> None:
    registry = CollectorRegistry()
    meter = Meter(registry)
    meter.declare_spend(
        "openai",
        dimensions=({"model": "gpt-4o", "sub_account_id": "growth"}, {"model": "gpt-4o-mini"}),
    )
    meter.declare_spend("anthropic", currency="eur")
    meter.declare_spend("bedrock", dimensions={"region_id": "eu-west-1"})  # one set
    assert source_spend(registry) == {
        ("openai", "gpt-4o", "growth", "", "", "", "USD"): 0.0,
        ("openai", "gpt-4o-mini", "", "", "", "", "USD"): 0.0,
        ("anthropic", "", "", "", "", "", "EUR"): 0.0,
        ("bedrock", "", "", "", "eu-west-1", "", "USD"): 0.0,
    }
    meter.record_spend("openai", 2, dimensions={"sub_account_id": "growth", "model": "gpt-4o"})
    meter.declare_spend("openai", dimensions={"model": "gpt-4o", "sub_account_id": "growth"})
    assert source_spend(registry)[("openai", "gpt-4o", "growth", "", "", "", "USD")] == 2.0


def test_described_declarations_are_checked_and_bounded_like_records() -> None:
    registry = CollectorRegistry()
    meter = Meter(registry, max_budgets=1, max_series=1)
    with pytest.raises(ValueError, match="dimension 'team' cannot be recorded"):
        meter.declare_spend("openai", dimensions=({"model": "a"}, {"team": "x"}))
    assert source_spend(registry) == {}  # a bad set declares nothing, the good one neither
    with pytest.raises(ValueError, match="map dimension names"):
        meter.declare_spend("openai", dimensions=["model"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="source must name"):
        meter.declare_spend("")
    meter.declare_spend("openai", dimensions=({"model": "a"}, {"model": "b"}))
    other = ("openai", *(["other"] * len(SOURCE_DIMENSIONS)), "USD")
    assert set(source_spend(registry)) == {("openai", "a", "", "", "", "", "USD"), other}
    with pytest.raises(TooManyBudgets, match="sources already"):
        meter.declare_spend("anthropic")


def test_the_module_declares_with_the_default_meter(monkeypatch: pytest.MonkeyPatch) -> None:
    registry = CollectorRegistry()
    monkeypatch.setattr(metering, "_default", Meter(registry))
    metering.declare_spend("openai", dimensions={"model": "gpt-4o"})
    assert source_spend(registry) == {("openai", "gpt-4o", "", "", "", "", "USD"): 0.0}
