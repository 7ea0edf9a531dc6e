"""The line index gives exactly what scanning every line with ``line_matches`` gives."""

from __future__ import annotations

import random
from decimal import Decimal

from budget_exporter.accounting.budgets import line_matches
from budget_exporter.accounting.lineindex import LineIndex
from budget_exporter.core.model import Period, SpendLine


def lines(count: int, seed: int = 7) -> list[SpendLine]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        dims = {"team": f"t{rng.randrange(20)}", "env": rng.choice(["prod", "dev", "stage"])}
        if rng.random() < 0.2:
            del dims["env"]  # a missing dimension matches ""
        out.append(
            SpendLine.of(
                rng.choice([Period.MONTHLY, Period.DAILY]),
                Decimal(rng.randrange(1, 10_000)) / 100,
                rng.choice(["USD", "USD", "EUR"]),
                dims,
            )
        )
    return out


MATCHES = [
    {},
    {"team": "t3"},
    {"team": "nobody"},
    {"env": ""},
    {"env": "prod", "team": "t1"},
    {"team": "/t1[0-9]?/"},
    {"team": "/t(2|4)/", "env": "/prod|dev/"},
    {"team": "/.*/", "env": "/(prod)?/"},
    {"unknown": ""},
    {"unknown": "x"},
]


def scan(all_lines: list[SpendLine], period: Period, match: dict[str, str]):
    sums: dict[str, Decimal] = {}
    counts: dict[str, int] = {}
    for line in all_lines:
        if line.period == period and line_matches(line, match):
            sums[line.currency] = sums.get(line.currency, Decimal(0)) + line.amount
            counts[line.currency] = counts.get(line.currency, 0) + 1
    return sums, counts


def test_index_agrees_with_a_full_scan() -> None:
    all_lines = lines(2000)
    for period in (Period.MONTHLY, Period.DAILY):
        index = LineIndex.of(all_lines, period)
        for match in MATCHES:
            assert index.summary(match) == scan(all_lines, period, match), match
            assert index.summary(match) == scan(all_lines, period, match)  # memoised, same


def test_selection_keeps_line_order_and_lists_dimensions() -> None:
    all_lines = lines(300)
    index = LineIndex.of(all_lines, Period.MONTHLY)
    chosen = list(index.select({"team": "/t1[0-9]?/", "env": "prod"}))
    assert chosen == sorted(chosen) and chosen
    monthly = [ln for ln in all_lines if ln.period == Period.MONTHLY]
    assert all(monthly[i].dims["env"] == "prod" for i in chosen)
    assert index.dimensions == {"team", "env"}
    assert len(LineIndex.of([], Period.MONTHLY)) == 0


def test_a_pattern_runs_once_per_distinct_value(monkeypatch) -> None:
    calls: list[str] = []

    class Counting:
        def fullmatch(self, value: str) -> bool:
            calls.append(value)
            return value.endswith("1")

    monkeypatch.setattr(
        "budget_exporter.accounting.lineindex.match_pattern",
        lambda wanted: Counting() if wanted.startswith("/") else None,
    )
    index = LineIndex.of(lines(5000), Period.MONTHLY)
    index.summary({"team": "/any/"})
    index.summary({"team": "/any/", "env": "prod"})  # the team selection is reused
    assert sorted(calls) == sorted({f"t{i}" for i in range(20)})
