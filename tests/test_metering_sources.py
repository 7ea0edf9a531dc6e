"""The metering helper's per-source counter: a spend described by source and dimensions."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import CollectorRegistry

from budget_exporter.metering import SOURCE_DIMENSIONS, Meter, TooManyBudgets


def sample(registry: CollectorRegistry, **labels: str) -> float | None:
    full = {"source": "", **{d: "" for d in SOURCE_DIMENSIONS}, "currency": "USD", **labels}
    return registry.get_sample_value("budget_app_source_spend_amount_total", full)


def test_record_spend_counts_by_source_and_dimensions() -> None:
    registry = CollectorRegistry()
    meter = Meter(registry)
    assert registry.get_sample_value("budget_app_source_spend_amount_total") is None  # lazily
    meter.record_spend("openai", 0.5, dimensions={"model": "gpt-4o", "sub_account_id": "growth"})
    meter.record_spend("openai", 0.25, dimensions={"sub_account_id": "growth", "model": "gpt-4o"})
    assert sample(registry, source="openai", model="gpt-4o", sub_account_id="growth") == 0.75
    meter.record_spend("openai", 0)  # nothing to add: no series either
    assert sample(registry, source="openai") is None


def test_bad_descriptions_are_refused() -> None:
    meter = Meter(CollectorRegistry())
    with pytest.raises(ValueError, match="dimension 'team' cannot be recorded"):
        meter.record_spend("openai", 1, dimensions={"team": "x"})
    with pytest.raises(ValueError, match="source must name"):
        meter.record_spend("", 1)
    with pytest.raises(ValueError, match="three-letter"):
        meter.record_spend("openai", 1, currency="dollars")


def test_series_and_sources_are_bounded(caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    meter = Meter(registry, max_series=2, max_budgets=2)
    for model in ("a", "b", "c", "d"):
        with caplog.at_level(logging.WARNING):
            meter.record_spend("openai", 1, dimensions={"model": model})
    other = {d: "other" for d in SOURCE_DIMENSIONS}
    assert sample(registry, source="openai", **other) == 2.0  # c and d, nothing lost
    assert "counted as 'other'" in caplog.text
    meter.record_spend("anthropic", 1)
    with pytest.raises(TooManyBudgets, match="sources already"):
        meter.record_spend("third", 1)
