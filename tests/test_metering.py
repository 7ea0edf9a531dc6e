"""``budget_exporter.metering`` and the guard's record-after-spend, on real prometheus_client."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests
import responses
from prometheus_client import CollectorRegistry

from budget_exporter.guard import BudgetCheckError, BudgetExceeded, BudgetGuard
from budget_exporter.metering import OTHER, Meter, TooManyBudgets
from budget_exporter.pricing import TokenCounts, UnknownModelError, estimate, load_price_table
from tests.support.llm import APP_SPEND_TOTAL, app_spend, parse_metrics

URL = "http://exporter.test:9820"
CHECK = f"{URL}/api/v1/check"


def test_costs_and_priced_tokens_accumulate() -> None:
    registry = CollectorRegistry()
    meter = Meter(registry)
    meter.record_cost("openai", 0.5, model="gpt-4o")
    meter.record_cost("openai", Decimal("0.25"), model="gpt-4o")
    meter.record_cost("ads", 2, currency="eur")
    priced = meter.record_tokens("openai", "gpt-4o-mini", input_tokens=1000, output_tokens=500)
    assert priced == estimate("gpt-4o-mini", 1000, 500)
    assert app_spend(registry) == pytest.approx(
        {
            ("openai", "gpt-4o", "USD"): 0.75,
            ("ads", "", "EUR"): 2.0,
            ("openai", "gpt-4o-mini", "USD"): float(priced),
        }
    )


@pytest.mark.parametrize(
    ("cost", "error"),
    [(-1, ValueError), (float("nan"), ValueError), (True, TypeError), ("1", TypeError)],
)
def test_bad_costs_are_refused(cost: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        Meter(CollectorRegistry()).record_cost("openai", cost)


def test_unknown_models_are_an_error_not_a_zero() -> None:
    with pytest.raises(UnknownModelError):
        Meter(CollectorRegistry()).record_tokens("openai", "no-such-model", 10, 10)
    table = load_price_table(models={"house": {"input": 1, "output": 1}})
    assert Meter(CollectorRegistry(), table=table).record_tokens("x", "house", 10**6) == 1


def test_label_combinations_are_bounded() -> None:
    registry = CollectorRegistry()
    meter = Meter(registry, max_series=2)
    for index in range(5):
        meter.record_cost("openai", 1, model=f"model-{index}")
    assert app_spend(registry) == {
        ("openai", "model-0", "USD"): 1.0,
        ("openai", "model-1", "USD"): 1.0,
        ("openai", OTHER, "USD"): 3.0,  # nothing lost, the total stays right
    }


def test_budget_names_are_bounded_and_never_merged() -> None:
    registry = CollectorRegistry()
    meter = Meter(registry, max_series=2, max_budgets=2)
    meter.record_cost("a", 1, model="m1")
    meter.record_cost("b", 1, model="m2")
    meter.record_cost("b", 2, model="m3")  # over max_series: b's "other", not a's
    with pytest.raises(TooManyBudgets, match="'c' is not recorded"):
        meter.record_cost("c", 5, model="m1")
    meter.record_cost("a", 1, model="m4")  # known budgets still record
    assert app_spend(registry) == {
        ("a", "m1", "USD"): 1.0,
        ("b", "m2", "USD"): 1.0,
        ("b", OTHER, "USD"): 2.0,
        ("a", OTHER, "USD"): 1.0,
    }


def test_token_counts_are_taken_the_same_way_everywhere() -> None:
    counts = TokenCounts(1000, 200, cached_input_tokens=300, cache_write_tokens=40)
    expected = load_price_table().cost("claude-sonnet-4", counts.by_type())
    meter = Meter(CollectorRegistry())
    forms = [
        estimate("claude-sonnet-4", 1000, 200, cached_input_tokens=300, cache_write_tokens=40),
        estimate(
            "claude-sonnet-4",
            input_tokens=1000,
            output_tokens=200,
            cached_input_tokens=300,
            cache_write_tokens=40,
        ),
        load_price_table().estimate("claude-sonnet-4", 1000, 200, cached_input_tokens=300,
                                    cache_write_tokens=40),
        meter.record_tokens("x", "claude-sonnet-4", 1000, output_tokens=200,
                            cached_input_tokens=300, cache_write_tokens=40),
    ]  # fmt: skip
    assert forms == [expected] * 4 and expected > estimate("claude-sonnet-4", 1000, 200)
    with pytest.raises(TypeError):
        estimate("gpt-4o", 1, 2, 3)  # the cache counts are named, never positional
    with pytest.raises(TypeError):
        meter.record_tokens("x", "gpt-4o", input=1)


def test_multiprocess_mode_sums_every_worker(tmp_path: Path) -> None:
    """Two worker processes record through the default meter; the collector sums them."""
    directory = tmp_path / "multiproc"
    directory.mkdir()
    worker = textwrap.dedent(
        """
        import sys
        from budget_exporter.metering import record_cost
        for _ in range(10):
            record_cost("openai", float(sys.argv[1]), model="gpt-4o")
        """
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    for amount in ("0.5", "1.5"):
        subprocess.run([sys.executable, "-c", worker, amount], env=env, check=True, timeout=60)
    collect = textwrap.dedent(
        """
        from prometheus_client import CollectorRegistry, generate_latest, multiprocess
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        print(generate_latest(registry).decode())
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", collect], env=env, check=True, capture_output=True, text=True
    ).stdout
    series = parse_metrics(out)
    key = (
        APP_SPEND_TOTAL,
        frozenset({"budget": "openai", "model": "gpt-4o", "currency": "USD"}.items()),
    )
    assert series[key] == pytest.approx(20.0)


def _allow(currency: str = "USD") -> None:
    responses.add(
        responses.POST,
        CHECK,
        json={"allowed": True, "budget": "openai", "currency": currency, "reason": "ok"},
    )


@responses.activate
def test_spending_records_the_actual_cost() -> None:
    _allow()
    registry = CollectorRegistry()
    guard = BudgetGuard(URL, meter=Meter(registry))
    with guard.spending("openai", cost=0.05) as spent:
        spent.record_tokens("gpt-4o", 1000, 200)
    # The series without a model, where the estimate would have gone, was declared at the
    # check (a model named only when recording cannot be known then).
    assert app_spend(registry) == pytest.approx(
        {
            ("openai", "gpt-4o", "USD"): float(estimate("gpt-4o", 1000, 200)),
            ("openai", "", "USD"): 0.0,
        }
    )


@responses.activate
def test_spending_records_the_estimate_unless_told_or_failed() -> None:
    _allow("EUR")
    registry = CollectorRegistry()
    guard = BudgetGuard(URL, meter=Meter(registry))
    with guard.spending("openai", cost=0.05):
        pass  # nothing recorded: the estimate counts
    with guard.spending("openai", cost=0.05) as spent:
        spent.record(0)  # told it was free: nothing more
    with pytest.raises(RuntimeError), guard.spending("openai", cost=0.05):
        raise RuntimeError("the call failed before spending")
    assert app_spend(registry) == pytest.approx({("openai", "", "EUR"): 0.05})


@responses.activate
def test_spending_is_denied_before_the_block_runs() -> None:
    responses.add(
        responses.POST, CHECK, json={"allowed": False, "budget": "openai", "reason": "stop"}
    )
    registry = CollectorRegistry()
    ran = []
    with pytest.raises(BudgetExceeded), BudgetGuard(URL, meter=Meter(registry)).spending("openai"):
        ran.append(True)
    assert not ran and app_spend(registry) == {}


@responses.activate
def test_guarded_records_from_the_result() -> None:
    _allow()
    registry = CollectorRegistry()
    guard = BudgetGuard(URL, meter=Meter(registry))

    @guard.guarded("openai", cost=0.1, record=lambda reply: reply["cost"])
    def call() -> dict[str, float]:
        return {"cost": 0.07}

    assert call() == {"cost": 0.07}
    assert call() == {"cost": 0.07}
    assert app_spend(registry) == pytest.approx({("openai", "", "USD"): 0.14})


@responses.activate
@pytest.mark.parametrize("how", ["spending", "guarded"])
def test_the_caller_says_the_currency_when_the_exporter_cannot(how: str) -> None:
    responses.add(responses.POST, CHECK, body=requests.ConnectionError("exporter down"))
    registry = CollectorRegistry()
    guard = BudgetGuard(URL, meter=Meter(registry))
    if how == "spending":
        with guard.spending("ads", cost=0.5, currency="eur") as spent:
            spent.record(0.25)
    else:
        guard.guarded("ads", cost=0.5, record=lambda reply: reply, currency="EUR")(lambda: 0.25)()
    assert app_spend(registry) == {("ads", "", "EUR"): 0.25}  # not USD, which the budget ignores


@responses.activate
def test_without_a_currency_nothing_is_recorded_in_a_guessed_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    responses.add(responses.POST, CHECK, body=requests.ConnectionError("exporter down"))
    registry = CollectorRegistry()
    guard = BudgetGuard(URL, meter=Meter(registry))
    with guard.spending("ads", cost=0.5) as spent:
        assert spent.record(0.25) == 0
    assert "cost 0.25 not recorded: its currency is unknown" in caplog.text
    assert "pass currency=" in caplog.text
    with guard.spending("ads", cost=0.5) as spent:  # tokens are priced in the table's currency
        priced = spent.record_tokens("gpt-4o", 1000, 200)
    assert app_spend(registry) == pytest.approx({("ads", "gpt-4o", "USD"): float(priced)})


@responses.activate
def test_the_currency_the_exporter_gave_is_remembered_for_an_outage() -> None:
    _allow("EUR")
    responses.add(responses.POST, CHECK, body=requests.ConnectionError("exporter down"))
    registry = CollectorRegistry()
    guard = BudgetGuard(URL, meter=Meter(registry), cache_seconds=0)
    for cost in (1, 2):  # the first check is answered, the second is not
        with guard.spending("openai", cost=cost) as spent:
            spent.record(cost / 10)
    assert app_spend(registry) == pytest.approx({("openai", "", "EUR"): 0.3})


@responses.activate
def test_a_currency_the_exporter_contradicts_is_an_error_before_spending() -> None:
    _allow("EUR")
    ran = []
    guard = BudgetGuard(URL, meter=Meter(CollectorRegistry()))
    with (
        pytest.raises(BudgetCheckError, match="is in EUR"),
        guard.spending("openai", currency="USD"),
    ):
        ran.append(True)
    assert not ran
