"""Each window's query fails on its own (issue 19, item 10): a month's query that fails
leaves the day's figures standing.  The fake query API answers by the range asked: the test
clock is the 25th, 12:00, so the day's window is ``43200s`` and the month's ``2116800s``.
Answers are the recorded ones of ``fixtures/``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses

from budget_exporter.core.errors import SourceError
from budget_exporter.core.model import Period
from budget_exporter.core.periods import window_at
from budget_exporter.providers.prometheus import SERIES
from tests.support.fixtures import load_fixture
from tests.support.llm import NOW, make_provider

URL = "https://prometheus.test"
QUERY_URL = f"{URL}/api/v1/query"
FLAGS_URL = f"{URL}/api/v1/status/flags"
DAY = window_at(Period.DAILY, NOW)
MONTH = window_at(Period.MONTHLY, NOW)
DAY_RANGE = f"[{int((NOW - DAY.start).total_seconds())}s]"
MONTH_RANGE = f"[{int((NOW - MONTH.start).total_seconds())}s]"
Reply = tuple[int, dict[str, str], str]


def meter(**fields: Any) -> Any:
    settings = {"url": URL, "currency": "USD", "query": "sum(increase(s_total[{range}]))"}
    return make_provider("prometheus", **(settings | fields))


def by_range(month: Reply, day: Reply | None = None) -> Callable[[Any], Reply]:
    """A query API answering the month's range with ``month`` and anything else with
    ``day`` (the recorded one-series answer, 4, unless given)."""
    spend = (200, {}, json.dumps(load_fixture("prometheus", "spend_total")))

    def answer(request: requests.PreparedRequest) -> Reply:
        (query,) = parse_qs(urlsplit(request.url).query)["query"]
        return month if MONTH_RANGE in query else day or spend

    return answer


UNAVAILABLE = (503, {}, json.dumps(load_fixture("prometheus", "error_unavailable")))


def queries() -> list[str]:
    return [
        parse_qs(urlsplit(c.request.url).query)["query"][0]
        for c in responses.calls
        if "/api/v1/query" in c.request.url
    ]


@responses.activate
def test_a_failing_month_leaves_the_days_figures() -> None:
    responses.add_callback(responses.GET, QUERY_URL, callback=by_range(UNAVAILABLE))
    result = meter().poll([DAY, MONTH])
    assert [(ln.period, ln.amount) for ln in result.lines] == [(Period.DAILY, 4)]
    assert [(s.name, dict(s.labels)) for s in result.samples] == [(SERIES, {"period": "daily"})]
    (failed,) = result.failed_windows
    assert failed.period == Period.MONTHLY
    assert "answered HTTP 503: unavailable: too many queries" in failed.error
    assert failed.last_success is None  # the engine's to say
    assert len(queries()) == 2


@responses.activate
def test_a_month_beyond_the_retention_leaves_the_day() -> None:
    responses.get(QUERY_URL, json=load_fixture("prometheus", "spend_total"))
    responses.get(FLAGS_URL, json=load_fixture("prometheus", "status_flags"))  # 15 days
    result = meter().poll([DAY, MONTH])
    assert [ln.period for ln in result.lines] == [Period.DAILY]
    (failed,) = result.failed_windows
    assert failed.period == Period.MONTHLY
    assert "server keeps 15d of samples" in failed.error and "\n" not in failed.error


@responses.activate
def test_every_window_failing_fails_the_poll_with_the_first_error() -> None:
    error = (400, {}, json.dumps(load_fixture("prometheus", "error_bad_data")))
    responses.add_callback(responses.GET, QUERY_URL, callback=by_range(UNAVAILABLE, error))
    with pytest.raises(SourceError, match="answered HTTP 400") as caught:
        meter().poll([DAY, MONTH])
    assert "503" not in str(caught.value)
    # One window, failing: the poll fails as it always did.
    with pytest.raises(SourceError, match="answered HTTP 503"):
        meter().poll([MONTH])


@responses.activate
def test_a_shared_query_that_fails_is_sent_once_and_fails_both_windows() -> None:
    responses.get(QUERY_URL, status=503, json=load_fixture("prometheus", "error_unavailable"))
    p = meter(metered_after="bill")
    p.context = dataclasses.replace(p.context, horizon=lambda: NOW - timedelta(hours=3))
    with pytest.raises(SourceError, match="too many queries"):
        p.poll([DAY, MONTH])
    assert queries() == ["sum(increase(s_total[10800s]))"]


@responses.activate
def test_the_duplicates_check_covers_the_windows_that_answered() -> None:
    spend = by_range(UNAVAILABLE)
    none = (200, {}, json.dumps(load_fixture("prometheus", "empty_vector")))

    def answer(request: requests.PreparedRequest) -> Reply:
        (query,) = parse_qs(urlsplit(request.url).query)["query"]
        if query.startswith("count"):  # the check: no duplicates over the day
            return none if MONTH_RANGE not in query else UNAVAILABLE
        return spend(request)

    responses.add_callback(responses.GET, QUERY_URL, callback=answer)
    p = meter(duplicates_query="count without (replica) (increase(s_total[{range}])) > 1")
    result = p.poll([DAY, MONTH])
    assert [ln.period for ln in result.lines] == [Period.DAILY]
    # Asked over the month, which failed, the check would fail the day with it.
    assert queries()[-1] == f"count without (replica) (increase(s_total{DAY_RANGE})) > 1"


@responses.activate
def test_a_recovered_month_counts_again() -> None:
    state = {"month": UNAVAILABLE}
    spend = (200, {}, json.dumps(load_fixture("prometheus", "spend_total")))
    responses.add_callback(responses.GET, QUERY_URL, callback=lambda r: by_range(state["month"])(r))
    p = meter()
    assert [f.period for f in p.poll([DAY, MONTH]).failed_windows] == [Period.MONTHLY]
    state["month"] = spend
    result = p.poll([DAY, MONTH])
    assert result.failed_windows == ()
    assert sorted(ln.period for ln in result.lines) == [Period.DAILY, Period.MONTHLY]
