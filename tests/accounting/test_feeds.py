"""budget_source_info (which sources feed which budget) and the per-period cost lines."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal

from budget_exporter.accounting.budgets import IndexCache, compute_budgets
from budget_exporter.accounting.feeds import budget_feeds
from budget_exporter.core.model import Period, SpendLine
from budget_exporter.exposition.families import OTHER, cap_source_lines, share_series
from tests.exposition.test_families import samples

CONFIG = """
global: {max_series_per_source: 4}
sources:
  - name: llm
    provider: static
    currency: USD
    lines:
      - {amount: 5, dimensions: {model: gpt-4o}}
      - {amount: 2, dimensions: {model: gpt-4o-mini}}
      - {amount: 1, dimensions: {model: o3}}
  - {name: cloud, provider: static, currency: USD, lines: [{amount: 10, dimensions: {service_name: EC2}}]}
  - {name: invoices, provider: static, currency: USD, amount: 3}
  - {name: eu, provider: static, currency: EUR, amount: 4}
budgets:
  - {name: total, limit: 100, currency: USD}
  - {name: gpt, limit: 20, currency: USD, period: daily, match: {model: "/gpt-.*/"}}
  - {name: ec2, limit: 20, currency: USD, sources: [cloud, llm], match: {service_name: EC2}}
  - {name: eu, limit: 20, currency: EUR, period: quarterly, sources: [eu]}
"""


def info(engine) -> set[tuple[str, str, str, str, str]]:
    got = samples(engine.snapshot.rendered.text)
    rows = set()
    for labels, value in got.get("budget_source_info", []):
        assert value == 1
        rows.add(
            (labels["budget"], labels["currency"], labels["period"], labels["source"],
             labels["provider"])
        )  # fmt: skip
    return rows


def test_info_lists_the_sources_each_budget_sums(make_engine) -> None:
    engine = make_engine(CONFIG)
    # Before the first poll every configured source could contribute.
    before = info(engine)
    assert ("ec2", "USD", "monthly", "llm", "static") in before
    assert engine.poll_all_once()
    after = info(engine)
    every = {"llm", "cloud", "invoices", "eu"}
    assert {s for b, *_, s, _ in after if b == "total"} == every
    # A match filters out the sources none of whose lines pass it.
    assert {s for b, *_, s, _ in after if b == "gpt"} == {"llm"}
    assert {s for b, *_, s, _ in after if b == "ec2"} == {"cloud"}
    # Listed sources only (a source in another currency is still listed for "total").
    assert {s for b, *_, s, _ in after if b == "eu"} == {"eu"}
    assert ("gpt", "USD", "daily", "llm", "static") in after
    assert ("eu", "EUR", "quarterly", "eu", "static") in after


def test_cost_lines_for_every_period_a_budget_uses(make_engine) -> None:
    engine = make_engine(CONFIG)
    assert engine.poll_all_once()
    lines = samples(engine.snapshot.rendered.text)["budget_source_cost_amount"]
    periods: dict[str, set[str]] = {}
    for labels, _ in lines:
        periods.setdefault(labels["source"], set()).add(labels["period"])
    # monthly always; daily where the gpt budget (all sources) asks for it; quarterly for eu.
    assert periods == {
        "llm": {"monthly", "daily"},
        "cloud": {"monthly", "daily"},
        "invoices": {"monthly", "daily"},
        "eu": {"monthly", "daily", "quarterly"},
    }
    # The cap applies per source and currency, shared among the periods: four series
    # for llm's two periods, so two each, the smaller lines summed into "other" and
    # each period's total kept.
    assert len([labels for labels, _ in lines if labels["source"] == "llm"]) == 4
    for period in ("monthly", "daily"):
        llm = {
            labels["model"]: value
            for labels, value in lines
            if labels["source"] == "llm" and labels["period"] == period
        }
        assert llm == {"gpt-4o": 5.0, "other": 3.0}, period


def test_periods_share_the_cap_fairly() -> None:
    # Under the cap: every line of every period.
    assert share_series({"monthly": 3, "daily": 3}, 200) == {"monthly": 3, "daily": 3}
    # Even shares, the odd slots to monthly first, then daily ...
    assert share_series({"monthly": 50, "daily": 50, "quarterly": 50}, 10) == {
        "monthly": 4,
        "daily": 3,
        "quarterly": 3,
    }
    assert share_series({"yearly": 50, "daily": 51, "monthly": 50}, 11) == {
        "monthly": 4,
        "daily": 4,
        "yearly": 3,
    }
    # ... a period with few lines keeps them all and leaves the rest to the others.
    assert share_series({"monthly": 40, "daily": 9, "quarterly": 2}, 20) == {
        "quarterly": 2,
        "daily": 9,
        "monthly": 9,
    }
    # Each period keeps one series (its sum), even with a cap below the number of periods.
    assert share_series({"monthly": 5, "daily": 5, "yearly": 5}, 2) == {
        "monthly": 1,
        "daily": 1,
        "yearly": 1,
    }


def test_cap_is_per_source_and_currency_across_periods() -> None:
    def spend(period: Period, amount: int, currency: str, model: str) -> SpendLine:
        return SpendLine.of(period, Decimal(amount), currency, {"model": model})

    lines = [
        *(spend(Period.MONTHLY, 10 * i, "USD", f"m{i}") for i in range(1, 31)),
        *(spend(Period.DAILY, i, "USD", f"m{i}") for i in range(1, 31)),
        *(spend(Period.YEARLY, 100 * i, "USD", f"m{i}") for i in range(1, 4)),
        *(spend(Period.MONTHLY, i, "EUR", f"e{i}") for i in range(1, 13)),
    ]
    capped = cap_source_lines(lines, 10)
    usd = {p: [ln for ln in got if ln.currency == "USD"] for p, got in capped.items()}
    eur = [ln for got in capped.values() for ln in got if ln.currency == "EUR"]
    # 10 USD series in all: yearly keeps its 3 lines, monthly and daily share the other 7.
    assert sum(len(got) for got in usd.values()) == 10
    assert [len(usd[p]) for p in ("yearly", "monthly", "daily")] == [3, 4, 3]
    assert [ln.dims["model"] for ln in usd["monthly"]] == ["m30", "m29", "m28", OTHER]
    # Each period's total stays exact; the other currency has its own cap.
    for period, factor in (("monthly", 10), ("daily", 1), ("yearly", 100)):
        total = factor * sum(range(1, 31 if period != "yearly" else 4))
        assert sum(ln.amount for ln in usd[period]) == total, period
    assert len(eur) == 10
    assert sum(ln.amount for ln in eur) == sum(range(1, 13))


class CountingLines(tuple[SpendLine, ...]):
    """A result's lines that count how often something walks through them."""

    walks = 0

    def __iter__(self) -> Iterator[SpendLine]:
        type(self).walks += 1
        return super().__iter__()


def test_feeds_look_lines_up_in_the_index_not_once_per_budget(make_engine) -> None:
    teams = [f"team-{i % 60}" for i in range(600)]
    random.Random(13).shuffle(teams)  # each team's lines spread through the source
    lines = "".join(f"\n      - {{amount: 1, dimensions: {{tag_team: {team}}}}}" for team in teams)
    budgets = "".join(
        f"\n  - {{name: t{t}, limit: 10, currency: USD, match: {{tag_team: team-{t}}}}}"
        for t in range(61)  # team-60 has no line
    )
    engine = make_engine(
        f"""
sources:
  - name: cur
    provider: static
    currency: USD
    lines:{lines}
  - {{name: flat, provider: static, currency: USD, amount: 3}}
budgets:{budgets}
  - {{name: low, limit: 10, currency: USD, match: {{tag_team: "/team-[0-4]/"}}}}
"""
    )
    assert engine.poll_all_once()
    states = engine.live_states()
    result = states["cur"].result
    assert result is not None
    states["cur"] = states["cur"].with_(result=replace(result, lines=CountingLines(result.lines)))

    CountingLines.walks = 0
    feeds = budget_feeds(engine.config, states)
    # One walk to index the source's monthly lines, however many budgets match on it.
    assert CountingLines.walks == 1
    fed = {(f.budget, f.source) for f in feeds}
    assert {(f"t{t}", "cur") for t in range(60)} <= fed
    assert ("t60", "cur") not in fed  # no line of team-60: cur cannot contribute
    assert ("low", "cur") in fed
    assert {b for b, s in fed if s == "flat"} == set()  # its one line has no tag_team

    # With the indexes the budget computation kept, feeds walk no line at all.
    indexes: IndexCache = {}
    compute_budgets(engine.config, states, engine.now(), indexes)
    CountingLines.walks = 0
    assert budget_feeds(engine.config, states, indexes) == feeds
    assert CountingLines.walks == 0


def test_a_budget_without_a_usable_provider_limit_feeds_nothing(make_engine) -> None:
    """A GCP budget whose limit is last period's spend has no amount: its budget-exporter budget
    has no series, so budget_source_info must not offer it to the dashboards either."""
    from budget_exporter.core.model import PollResult, ProviderBudget

    engine = make_engine(
        """
        sources:
          - {name: llm, provider: static, currency: USD, amount: 5}
          - {name: gcp-budgets, provider: static, currency: USD, amount: 0}
        budgets:
          - {name: imported, limit_from: {source: gcp-budgets, budget: team}, currency: USD,
             sources: [llm]}
          - {name: plain, limit: 10, currency: USD, sources: [llm]}
        """
    )
    limit = Decimal(0)

    def poll(windows):
        budget = ProviderBudget("team", Period.MONTHLY, limit, "USD")
        return PollResult(budgets=(budget,))

    engine.runners["gcp-budgets"].provider.poll = poll
    assert engine.poll_all_once()
    shown = {name for name, *_ in info(engine)}
    assert engine.snapshot.budget("imported") is None
    assert shown == {"plain"}
    limit = Decimal(50)  # the provider budget gets an amount: the budget and its feeds appear
    engine.runners["gcp-budgets"].poll()
    assert engine.snapshot.budget("imported") is not None
    assert ("imported", "USD", "monthly", "gcp-budgets", "static") in info(engine)
    assert ("imported", "USD", "monthly", "llm", "static") in info(engine)
