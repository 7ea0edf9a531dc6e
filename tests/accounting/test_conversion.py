"""Budgets across currencies: which rate converts what, and the forecast at that rate."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from budget_exporter.accounting.budgets import compute_budgets, currency_mismatches
from budget_exporter.accounting.conversion import LeftOut, Quote, RateBook
from budget_exporter.accounting.sourcestate import SourceState
from budget_exporter.config.loader import load_config
from budget_exporter.core.model import Period, PollResult, Rate, SpendLine
from budget_exporter.core.periods import window_at
from budget_exporter.providers._rates import parse_ecb

NOW = datetime(2026, 11, 16, tzinfo=UTC)  # half of November has passed
ECB = (Path(__file__).parents[1] / "providers/rates/fixtures/eurofxref-daily.xml").read_bytes()


def day(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def state(name: str, *lines: SpendLine, rates: tuple[Rate, ...] = ()) -> SourceState:
    return SourceState(
        name=name,
        provider="demo",  # spend that accrues through the period
        poll_interval_seconds=60,
        result=PollResult(lines=lines, rates=rates),
        windows=(window_at(Period.MONTHLY, NOW),),
        up=True,
        attempted=True,
    )


def line(amount: str, currency: str) -> SpendLine:
    return SpendLine.of(Period.MONTHLY, Decimal(amount), currency)


@pytest.fixture
def config(write_config):
    return load_config(
        write_config(
            """
            sources:
              - {name: aws, provider: static, amount: 0, currency: USD}
              - {name: azure, provider: static, amount: 0, currency: EUR}
              - {name: ecb, provider: ecb_rates, max_age: 4d}
              - {name: treasury, provider: static_rates, rates: {EUR: {USD: 1}}, max_age: 4d}
            budgets:
              - {name: company, limit: 5000, currency: USD}
            """
        ),
        env={},
    )


def ecb_rates(published: str) -> tuple[Rate, ...]:
    return tuple(
        Rate(r.base, r.quote, r.value, day(published)) for r in parse_ecb(ECB)
    )  # the fixture's rates, published on another day


def test_spend_and_forecast_at_the_rate_to_the_cent(config) -> None:
    states = {
        "aws": state("aws", line("1200.10", "USD")),
        "azure": state("azure", line("800.00", "EUR"), line("33.33", "EUR")),
        "ecb": state("ecb", rates=ecb_rates("2026-11-13")),  # a Friday, 3 days before
        "treasury": state("treasury"),  # polled, no rates
    }
    (view,) = compute_budgets(config, states, NOW)
    converted = Decimal("833.33") * Decimal("1.0850")  # 904.16305
    assert view.spend == Decimal("1200.10") + converted
    assert round(view.spend, 2) == Decimal("2104.26")
    # linear projection of each part at the same rate: half the month gone
    assert round(view.forecast, 2) == Decimal("4208.53")
    assert view.forecast == pytest.approx(2 * (Decimal("1200.10") + converted))
    assert [p.billed for p in view.parts] == [Decimal("1200.10"), converted]
    (c,) = view.conversions
    assert (c.source, c.currency, c.native, c.amount) == (
        "azure",
        "EUR",
        Decimal("833.33"),
        converted,
    )
    # with a rates source configured, the EUR lines are no longer a "mismatch"
    assert not currency_mismatches(config, "azure", states["azure"].result)


def test_the_newest_fresh_rate_wins_then_direct_then_config_order(config) -> None:
    older = Rate("EUR", "USD", Decimal("1.07"), day("2026-11-12"))
    newer_inverse = Rate("USD", "EUR", Decimal("0.9"), day("2026-11-13"))
    book = RateBook.of(
        config,
        {
            "ecb": state("ecb", rates=(older,)),
            "treasury": state("treasury", rates=(newer_inverse,)),
        },
        NOW,
    )
    quote = book.quote("EUR", "USD")
    assert isinstance(quote, Quote)
    assert (quote.source, quote.how, str(quote.day)) == ("treasury", "inverse", "2026-11-13")
    assert quote.value == Decimal(1) / Decimal("0.9")
    same_day = Rate("EUR", "USD", Decimal("1.11"), day("2026-11-13"))
    book = RateBook.of(
        config,
        {
            "ecb": state("ecb", rates=(same_day,)),
            "treasury": state(
                "treasury", rates=(Rate("EUR", "USD", Decimal("1.2"), day("2026-11-13")),)
            ),
        },
        NOW,
    )
    chosen = book.quote("EUR", "USD")
    assert isinstance(chosen, Quote) and chosen.source == "ecb"  # listed first


@pytest.mark.parametrize(
    ("published", "fresh"),
    [("2026-11-12", True), ("2026-11-11", False)],  # 4 days old is still fresh, 5 is not
)
def test_a_rate_is_fresh_for_max_age_days(config, published: str, fresh: bool) -> None:
    book = RateBook.of(config, {"ecb": state("ecb", rates=ecb_rates(published))}, NOW)
    quote = book.quote("EUR", "USD")
    if fresh:
        assert isinstance(quote, Quote)
    else:
        assert isinstance(quote, LeftOut) and quote.reason == "stale_rate"
        assert quote.stale is not None and str(quote.stale.day) == published
    assert book.quote("EUR", "BRL") == LeftOut("", "EUR", Decimal(0), "no_rate")
