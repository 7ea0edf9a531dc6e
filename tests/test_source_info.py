"""budget_source_info (which sources feed which budget) and the per-period cost lines."""

from __future__ import annotations

from tests.test_exposition import samples

CONFIG = """
global: {max_series_per_source: 2}
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
    # The cap applies per source, currency and period: two series per period for llm,
    # the smaller lines summed into "other", the total kept.
    for period in ("monthly", "daily"):
        llm = {
            labels["model"]: value
            for labels, value in lines
            if labels["source"] == "llm" and labels["period"] == period
        }
        assert llm == {"gpt-4o": 5.0, "other": 3.0}, period
