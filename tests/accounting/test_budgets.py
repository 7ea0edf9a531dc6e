from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from budget_exporter.accounting.budgets import (
    compute_budgets,
    currency_mismatches,
    limit_from_problems,
    line_matches,
)
from budget_exporter.accounting.sourcestate import SourceState
from budget_exporter.config.loader import load_config
from budget_exporter.core.model import Forecast, Period, PollResult, ProviderBudget, SpendLine
from budget_exporter.core.periods import window_at

NOW = datetime(2026, 11, 16, tzinfo=UTC)  # exactly half of November has passed


def state(name: str, *lines: SpendLine, now: datetime = NOW, **result: object) -> SourceState:
    periods = sorted({ln.period for ln in lines} | {Period.MONTHLY})
    return SourceState(
        name=name,
        provider="demo",  # spend that accrues through the period
        poll_interval_seconds=60,
        result=PollResult(lines=lines, **result),  # type: ignore[arg-type]
        windows=tuple(window_at(p, now) for p in periods),
        up=True,
        attempted=True,
    )


def line(
    amount: str, currency: str = "USD", period: Period = Period.MONTHLY, **dims: str
) -> SpendLine:
    return SpendLine.of(period, Decimal(amount), currency, dims)


@pytest.fixture
def config(write_config):
    return load_config(
        write_config(
            """
            sources:
              - {name: a, provider: static, amount: 0, currency: USD}
              - {name: b, provider: static, amount: 0, currency: USD}
              - {name: aws-budgets, provider: static, amount: 0, currency: USD}
            budgets:
              - {name: all, limit: 100, currency: USD, sources: [a, b]}
              - {name: gpt, limit: 50, currency: USD, sources: [a], match: {model: /gpt-.*/}}
              - {name: eu, limit: 10, currency: EUR, sources: [b], warning_ratio: 0.5, stop_ratio: 0.6}
              - {name: imported, limit_from: {source: aws-budgets, budget: Monthly}, currency: USD}
              - {name: imported-own-spend, limit_from: {source: aws-budgets, budget: Monthly},
                 currency: USD, sources: [a]}
            """
        )
    )


def by_name(views):
    return {v.name: v for v in views}


def test_budgets_sum_matching_lines_and_skip_other_currencies(config) -> None:
    mismatches: Counter = Counter()
    states = {
        "a": state("a", line("30", model="gpt-4o"), line("5", model="claude"), line("7", "EUR")),
        "b": state("b", line("10"), line("4", "EUR")),
        "aws-budgets": state("aws-budgets"),
    }
    views = by_name(compute_budgets(config, states, NOW))
    for name, source_state in states.items():
        mismatches += currency_mismatches(config, name, source_state.result)
    assert views["all"].spend == Decimal("45")
    assert views["gpt"].spend == Decimal("30")
    assert views["eu"].spend == Decimal("4")
    assert views["all"].usage_ratio == pytest.approx(0.45)
    assert views["eu"].state == "ok"  # 4 / 10 is below its 0.5 warning ratio
    # counted whether or not the budget is shown yet ("imported-own-spend" waits for its limit)
    assert mismatches == Counter(
        {
            ("all", "a", "EUR"): 1,
            ("all", "b", "EUR"): 1,
            ("eu", "b", "USD"): 1,
            ("imported-own-spend", "a", "EUR"): 1,
        }
    )


def test_states_and_thresholds(config) -> None:
    states = {
        "a": state("a"),
        "b": state("b", line("5.5", "EUR")),
        "aws-budgets": state("aws-budgets"),
    }
    eu = by_name(compute_budgets(config, states, NOW))["eu"]
    assert (eu.warning_ratio, eu.stop_ratio, eu.state) == (0.5, 0.6, "warning")
    states["b"] = state("b", line("6", "EUR"))
    assert by_name(compute_budgets(config, states, NOW))["eu"].state == "stop"
    states["b"] = state("b", line("10", "EUR"))
    assert by_name(compute_budgets(config, states, NOW))["eu"].state == "exceeded"
    states["b"] = state("b", line("4.99", "EUR"))
    assert by_name(compute_budgets(config, states, NOW))["eu"].state == "ok"


def test_budget_hidden_until_every_source_has_data_for_the_window(config) -> None:
    states = {"a": state("a", line("1")), "b": SourceState("b", "static", 60, attempted=True)}
    assert "all" not in by_name(compute_budgets(config, states, NOW))
    # data from October does not count for November
    states["b"] = state("b", line("1"), now=datetime(2026, 10, 31, 23, tzinfo=UTC))
    assert "all" not in by_name(compute_budgets(config, states, NOW))
    states["b"] = state("b", line("1"))
    assert by_name(compute_budgets(config, states, NOW))["all"].spend == 2


def test_linear_forecast_and_provider_forecast(config) -> None:
    states = {
        "a": state("a", line("20", model="gpt-4o")),
        "b": state("b", line("10"), forecasts=(Forecast(Period.MONTHLY, Decimal("15"), "USD"),)),
        "aws-budgets": state("aws-budgets"),
    }
    views = by_name(compute_budgets(config, states, NOW))
    # a: 20 at half the month -> 40; b: the provider says 15
    assert views["all"].forecast == Decimal("55")
    assert views["gpt"].forecast == Decimal("40")
    assert views["all"].forecast_ratio == pytest.approx(0.55)


def test_forecast_floor_early_in_the_period(config) -> None:
    early = datetime(2026, 11, 1, 2, tzinfo=UTC)  # two hours into the month
    states = {"a": state("a", line("3"), now=early), "b": state("b", now=early)}
    # floored at one day elapsed: 3 * 30 = 90, not 3 * 360
    assert by_name(compute_budgets(config, states, early))["all"].forecast == pytest.approx(
        Decimal(90)
    )


def test_limit_from_provider_budget(config) -> None:
    budget = ProviderBudget(
        "Monthly", Period.MONTHLY, Decimal("200"), "USD", Decimal("150"), Decimal("260"), 0.5, 0.9
    )
    states = {
        "a": state("a", line("20")),
        "b": state("b"),
        "aws-budgets": state("aws-budgets", budgets=(budget,)),
    }
    views = by_name(compute_budgets(config, states, NOW))
    imported, own = views["imported"], views["imported-own-spend"]
    assert (imported.limit, imported.spend, imported.forecast) == (200, 150, 260)
    assert (imported.warning_ratio, imported.stop_ratio) == (0.5, 0.9)
    assert (own.limit, own.spend, own.forecast) == (200, 20, 40)
    # The spend's origin: the provider budget's own actual, or the budget's source lines.
    assert [(p.source, p.billed, p.metered) for p in imported.parts] == [("aws-budgets", 150, 0)]
    assert [(p.source, p.billed) for p in own.parts] == [("a", 20)]


def test_limit_from_missing_or_mismatched_budget_is_hidden_and_explained(config) -> None:
    wrong = ProviderBudget("Monthly", Period.MONTHLY, Decimal("200"), "EUR")
    states = {
        "a": state("a"),
        "b": state("b"),
        "aws-budgets": state("aws-budgets", budgets=(wrong,)),
    }
    assert "imported" not in by_name(compute_budgets(config, states, NOW))
    problems = limit_from_problems(config, "aws-budgets", states["aws-budgets"].result)
    assert problems[0] == "budget imported: provider budget 'Monthly' is in EUR, not USD"
    problems = limit_from_problems(config, "aws-budgets", PollResult())
    assert "has no budget 'Monthly' (found: none)" in problems[0]


@pytest.mark.parametrize(
    "match, dims, expected",
    [
        ({}, {}, True),
        ({"model": "gpt-4o"}, {"model": "gpt-4o"}, True),
        ({"model": "gpt-4o"}, {"model": "gpt-4o-mini"}, False),
        ({"model": "/gpt-4o.*/"}, {"model": "gpt-4o-mini"}, True),
        ({"model": "/gpt/"}, {"model": "gpt-4o"}, False),  # anchored
        ({"model": ""}, {}, True),  # a missing dimension is empty
        ({"model": "x", "service_name": "/a|b/"}, {"model": "x", "service_name": "b"}, True),
    ],
)
def test_line_matches(match: dict[str, str], dims: dict[str, str], expected: bool) -> None:
    assert line_matches(line("1", **dims), match) is expected


def test_ratios_never_raise() -> None:
    from budget_exporter.accounting.budgets import BudgetView

    view = BudgetView(
        "b", "USD", "monthly", (), window_at(Period.MONTHLY, NOW),
        Decimal("1e-999999"), Decimal("100000"), Decimal("100000"), 0.8, 0.95,
    )  # fmt: skip
    assert view.usage_ratio == float("inf") and view.state == "exceeded"


def test_fixed_amounts_are_their_own_forecast(config) -> None:
    from dataclasses import replace

    states = {
        "a": replace(state("a", line("400")), provider="static", accrues=False),
        "b": state("b", line("10")),
        "aws-budgets": state("aws-budgets"),
    }
    # a: an invoice of 400 stays 400; b: 10 at half the month projects to 20
    assert by_name(compute_budgets(config, states, NOW))["all"].forecast == Decimal("420")
