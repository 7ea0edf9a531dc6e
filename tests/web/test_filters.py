"""``?budget=``, ``?match=`` and ``?state=`` on ``/api/v1/budgets`` and the landing page."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from budget_exporter.web.api import BudgetFilter, FilterError, read_filter
from budget_exporter.web.endpoints import ExporterServer
from tests.support.clock import Clock
from tests.support.llm import NOW

# States at this spend: ml-chat 50 % ok, ml-batch 85 % warning, ops 95 % stop, web 120 %
# exceeded; "later" waits for a source that never answers (unknown).
CONFIG = """
global: {warning_ratio: 0.8, stop_ratio: 0.9, retries: 0}
sources:
  - {name: s, provider: static, amount: 60, currency: USD}
  - {name: down, provider: http_json, url: "http://127.0.0.1:9/x", amount: total, currency: USD}
budgets:
  - {name: ml-chat, limit: 120, currency: USD, sources: [s], labels: {team: ml, tier: "1"}}
  - {name: ml-batch, limit: 70.5, currency: USD, sources: [s], labels: {team: ml}}
  - {name: ops, limit: 66.6, currency: USD, sources: [s], labels: {team: ops}}
  - {name: web, limit: 50, currency: USD, sources: [s]}
  - {name: later, limit: 50, currency: USD, sources: [down], labels: {team: ops}}
"""


@pytest.fixture
def url(make_engine: Any) -> Iterator[str]:
    engine = make_engine(CONFIG, Clock(NOW.timestamp()))
    engine.poll_all_once()
    server = ExporterServer(engine, "127.0.0.1:0")
    server.start()
    yield f"http://127.0.0.1:{server.port}"
    server.shutdown()


def names(url: str, query: str) -> list[str]:
    answer = requests.get(f"{url}/api/v1/budgets?{query}", timeout=10)
    assert answer.status_code == 200, answer.text
    document = answer.json()
    assert len(document["sources"]) == 2  # the sources are never filtered
    return [b["name"] for b in document["budgets"]]


def rows(url: str, query: str) -> list[str]:
    answer = requests.get(f"{url}/?{query}", timeout=10)
    assert answer.status_code == 200, answer.text
    body = answer.text.split("<tbody>")[1].split("</tbody>")[0]
    return re.findall(r"<tr data-state=\w+[^>]*><td class=name>([^<]+)</td>", body)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ["ml-chat", "ml-batch", "ops", "web", "later"]),
        ("budget=ops", ["ops"]),
        ("budget=ops&budget=web&budget=nothing", ["ops", "web"]),
        ("match=team=ml", ["ml-chat", "ml-batch"]),
        ("match=team!=ml", ["ops", "web", "later"]),
        ("match=team=", ["web"]),  # a label a budget lacks reads as empty, as in PromQL
        ("match=team=ml&match=tier=1", ["ml-chat"]),
        ("state=stop", ["ops"]),
        ("state=exceeded&state=warning", ["ml-batch", "web"]),
        ("state=unknown", ["later"]),
        ("state=ok&match=team=ops", []),
        ("match=team%3Dops&state=stop&state=unknown", ["ops", "later"]),
    ],
)
def test_filters_on_the_api_and_the_page(url: str, query: str, expected: list[str]) -> None:
    assert names(url, query) == expected
    # The page lists the same budgets (fullest first, those without data last).
    assert sorted(rows(url, query)) == sorted(expected)


def test_the_page_says_it_is_filtered(url: str) -> None:
    page = requests.get(f"{url}/?state=stop&match=team=ops", timeout=10).text
    assert "Showing 1 of 5 budgets (match=team=ops state=stop)" in page
    assert '<a href="/">show all</a>' in page
    # The summary still counts every budget.
    assert "5 budgets: 1 ok, 1 warning, 1 stop, 1 exceeded, 1 without data" in page
    empty = requests.get(f"{url}/?budget=nothing", timeout=10).text
    assert "no budget matches the filter" in empty
    assert "Showing" not in requests.get(f"{url}/?refresh=60", timeout=10).text


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("state=stopped", "unknown state 'stopped' (known: ok, warning, stop, exceeded, unknown)"),
        ("match=team", "match must be a label matcher such as team=ml or team!=ml, not 'team'"),
        ("match=1team=ml", "match must be a label matcher"),
        ('match={team="ml"}', "match must be a label matcher"),
    ],
)
def test_bad_filters_answer_400_in_one_line(url: str, query: str, error: str) -> None:
    api = requests.get(f"{url}/api/v1/budgets?{query}", timeout=10)
    assert api.status_code == 400 and error in api.json()["error"]
    page = requests.get(f"{url}/?{query}", timeout=10)
    assert page.status_code == 400 and error in page.text and page.text.count("\n") == 1


def test_the_api_refuses_unknown_parameters_the_page_ignores_them(url: str) -> None:
    api = requests.get(f"{url}/api/v1/budgets?stat=stop", timeout=10)
    assert api.status_code == 400
    assert api.json()["error"] == "unknown query parameter 'stat' (known: budget, match, state)"
    # A page is for people: a stray parameter (a tracking tag, a typo) shows every budget.
    assert len(rows(url, "utm_source=x")) == 5


def test_read_filter() -> None:
    assert not read_filter("")
    wanted = read_filter("budget=a&match=team!=ml&state=stop&match=env=")
    assert wanted == BudgetFilter(
        frozenset({"a"}), (("team", False, "ml"), ("env", True, "")), frozenset({"stop"})
    )
    assert wanted.keeps("a", {"team": "ops"}, "stop")
    assert not wanted.keeps("a", {"team": "ml"}, "stop")
    assert not wanted.keeps("a", {"env": "prod"}, "stop")
    assert not wanted.keeps("b", {}, "stop") and not wanted.keeps("a", {}, "ok")
    assert read_filter("refresh=30&x=1", also=("refresh",), strict=False) == BudgetFilter()
    with pytest.raises(FilterError, match="at most 100"):
        read_filter("&".join(f"budget=b{i}" for i in range(101)))
    with pytest.raises(FilterError, match="too many query parameters"):
        read_filter("&".join(f"state=ok{i}" for i in range(400)))
