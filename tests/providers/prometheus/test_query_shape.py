"""What a meter asks Prometheus (issue 19, item 10): only the windows its budgets use, and
each distinct query once.  Answers are the recorded ones of ``fixtures/``."""

from __future__ import annotations

import dataclasses
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import responses

from budget_exporter.config.loader import load_config
from budget_exporter.core.model import Period
from budget_exporter.core.periods import window_at
from tests.support.fixtures import load_fixture
from tests.support.llm import NOW, make_provider

URL = "https://prometheus.test"
QUERY_URL = f"{URL}/api/v1/query"
DAY = window_at(Period.DAILY, NOW)
MONTH = window_at(Period.MONTHLY, NOW)


@responses.activate
def test_windows_starting_at_the_same_horizon_are_asked_once() -> None:
    responses.get(QUERY_URL, json=load_fixture("prometheus", "spend_total"))
    p = make_provider(
        "prometheus",
        url=URL,
        currency="USD",
        metered_after="openai",
        query="sum(increase(spend_total[{range}]))",
    )
    horizon = NOW - timedelta(hours=3)  # after both the day's and the month's start
    p.context = dataclasses.replace(p.context, horizon=lambda: horizon)
    result = p.poll([DAY, MONTH])
    assert len(responses.calls) == 1
    assert parse_qs(urlsplit(responses.calls[0].request.url).query)["query"] == [
        "sum(increase(spend_total[10800s]))"
    ]
    assert {(ln.period, ln.amount) for ln in result.lines} == {
        (Period.DAILY, 4),
        (Period.MONTHLY, 4),
    }
    # Without a horizon the windows start apart: two queries.
    p.context = dataclasses.replace(p.context, horizon=lambda: None)
    p.poll([DAY, MONTH])
    queries = [c for c in responses.calls if "/api/v1/query" in c.request.url]
    assert len(queries) == 3


def test_a_meter_is_polled_only_for_the_periods_its_budgets_use(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.write_text(
        textwrap.dedent(
            """\
            sources:
              - {name: bill, provider: http_json, url: "http://127.0.0.1:9/c", amount: total,
                 currency: USD, data_through: through, period: daily}
              - {name: meter, provider: prometheus, url: "http://127.0.0.1:9", currency: USD,
                 metered_after: bill, query: "sum(increase(s[{range}]))"}
              - {name: spare, provider: prometheus, url: "http://127.0.0.1:9", currency: USD,
                 query: "sum(increase(s[{range}]))"}
            budgets:
              - {name: today, period: daily, limit: 10, currency: USD, sources: [bill, meter]}
            """
        )
    )
    config = load_config(path)
    by_name = {s.name: s for s in config.sources}
    assert config.periods(by_name["meter"]) == {Period.DAILY}  # no month query nobody reads
    assert config.periods(by_name["spare"]) == {Period.MONTHLY}  # counted by no budget


def test_the_test_clock_is_mid_month() -> None:
    # The first test needs the day and the month to start at different times.
    assert DAY.start != MONTH.start and NOW - DAY.start > timedelta(hours=3)
    assert NOW.tzinfo is UTC and datetime(NOW.year, NOW.month, 1, tzinfo=UTC) == MONTH.start
