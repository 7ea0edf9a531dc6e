"""Money bugs a one-line change would let through: currencies that must not mix, and a
forecast that must never be below the spend already made."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from budget_exporter.accounting.budgets import compute_budgets
from budget_exporter.core.model import (
    Forecast,
    Period,
    PollResult,
    ProviderBudget,
    SpendLine,
    Window,
)
from tests.accounting import test_budgets
from tests.accounting.test_budgets import NOW, by_name, line, state
from tests.accounting.test_nowcast import CONFIG, H0, Bill, seconds, spend
from tests.accounting.test_nowcast import NOW as NOWCAST_NOW
from tests.accounting.test_nowcast import RATE as METER_RATE
from tests.conftest import Clock

config = test_budgets.config  # the same sources and budgets (a fixture)


def test_a_provider_budget_in_another_currency_sets_no_limit(config) -> None:
    """An EUR provider budget, complete with actual and forecast (so nothing else could hide
    it), never gives a USD budget its limit, with or without spend of its own."""
    eur = ProviderBudget(
        "Monthly", Period.MONTHLY, Decimal("200"), "EUR", Decimal("150"), Decimal("260")
    )
    states = {
        "a": state("a", line("20")),
        "b": state("b"),
        "aws-budgets": state("aws-budgets", budgets=(eur,)),
    }
    views = by_name(compute_budgets(config, states, NOW))
    assert "imported" not in views
    assert "imported-own-spend" not in views
    # The same budget in USD is used: the test above fails for the currency alone.
    usd = ProviderBudget(
        "Monthly", Period.MONTHLY, Decimal("200"), "USD", Decimal("150"), Decimal("260")
    )
    states["aws-budgets"] = state("aws-budgets", budgets=(usd,))
    views = by_name(compute_budgets(config, states, NOW))
    assert views["imported"].limit == 200 and views["imported-own-spend"].limit == 200


def test_a_forecast_below_the_spend_is_raised_to_it_per_source(config) -> None:
    """Source a's provider forecast (10) is below its spend (30): it counts as 30. Source b has
    none: 10 spent at half the month projects to 20. The budget's forecast is 30 + 20."""
    states = {
        "a": state("a", line("30"), forecasts=(Forecast(Period.MONTHLY, Decimal("10"), "USD"),)),
        "b": state("b", line("10")),
        "aws-budgets": state("aws-budgets"),
    }
    both = by_name(compute_budgets(config, states, NOW))["all"]
    assert both.spend == 40
    assert both.forecast == 50


def test_a_provider_budget_forecast_below_its_actual_is_raised(config) -> None:
    low = ProviderBudget(
        "Monthly", Period.MONTHLY, Decimal("200"), "USD", Decimal("150"), Decimal("100")
    )
    states = {"a": state("a"), "b": state("b"), "aws-budgets": state("aws-budgets", budgets=(low,))}
    imported = by_name(compute_budgets(config, states, NOW))["imported"]
    assert (imported.spend, imported.forecast) == (150, 150)


class MixedBill(Bill):
    """A bill with EUR lines beside its USD ones, settled and open."""

    def poll(self, windows: Sequence[Window]) -> PollResult:
        usd = super().poll(windows)
        eur = SpendLine.of(Period.MONTHLY, Decimal(1000), "EUR")
        eur_open = SpendLine.of(Period.MONTHLY, Decimal(70), "EUR")
        return PollResult(
            lines=(*usd.lines, eur, eur_open),
            unsettled=(*usd.unsettled, eur_open),
            data_through=usd.data_through,
        )


def test_bill_and_meter_count_only_the_budgets_currency(make_engine) -> None:
    """A USD budget over a bill joined to a meter: the EUR lines of both are left out."""
    engine = make_engine(CONFIG, clock=Clock(NOWCAST_NOW.timestamp()))
    bill = MixedBill(400, H0, unsettled=7)

    def meter(windows: Sequence[Window]) -> PollResult:
        horizon = engine.runners["meter"]._context.horizon()
        lines = []
        for window in windows:
            start = max(window.start, horizon) if horizon else window.start
            usd = METER_RATE * seconds(start, engine.now())
            lines += [SpendLine.of(window.period, usd, "USD")]
            lines += [SpendLine.of(window.period, Decimal(5000), "EUR")]
        return PollResult(lines=tuple(lines), metered_from=horizon, metered=True)

    engine.runners["bill"].provider.poll = bill.poll  # type: ignore[method-assign]
    engine.runners["meter"].provider.poll = meter  # type: ignore[method-assign]
    assert engine.runners["bill"].poll() and engine.runners["meter"].poll()
    metered = METER_RATE * seconds(H0, NOWCAST_NOW)
    assert spend(engine, "llm") == 400 + metered
    view = engine.snapshot.budget("llm")
    assert (view.billed, view.metered) == (400, metered)
    assert spend(engine, "bill-only") == 407
