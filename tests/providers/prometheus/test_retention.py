"""A query reaching back further than the server keeps samples fails, with the reason
(issue 19, item 4): ``increase()`` over a range the server no longer has would silently
cover less.  Prometheus says its retention in ``GET /api/v1/status/flags`` (recorded in
``fixtures/status_flags.json``: the default 15 days); Thanos and Mimir do not (404), where
``retention`` says it.  The test clock is the 25th, 12:00: the month's window reaches back
24.5 days.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import pytest
import responses

from budget_exporter.core.errors import SourceError
from budget_exporter.core.model import Period
from budget_exporter.core.periods import window_at
from tests.support.fixtures import load_fixture
from tests.support.llm import MONTH, NOW, make_provider

URL = "https://prometheus.test"
QUERY_URL = f"{URL}/api/v1/query"
FLAGS_URL = f"{URL}/api/v1/status/flags"
DAY = window_at(Period.DAILY, NOW)


def meter(**fields: Any) -> Any:
    settings = {"url": URL, "currency": "USD", "query": "sum(increase(s_total[{range}]))"}
    return make_provider("prometheus", **(settings | fields))


@responses.activate
def test_a_month_beyond_prometheus_retention_fails_with_the_reason() -> None:
    responses.get(QUERY_URL, json=load_fixture("prometheus", "spend_total"))
    responses.get(FLAGS_URL, json=load_fixture("prometheus", "status_flags"))
    p = meter()
    with pytest.raises(SourceError) as caught:
        p.poll([MONTH])
    message = str(caught.value)
    assert "monthly window's query reaches back to 2026-11-01T00:00:00Z" in message
    assert "server keeps 15d of samples (storage.tsdb.retention.time)" in message
    # The daily window fits; the flags are asked once a day, not at every poll.
    assert [ln.period for ln in p.poll([DAY]).lines] == [Period.DAILY]
    with pytest.raises(SourceError):
        p.poll([MONTH])
    assert sum("/status/flags" in c.request.url for c in responses.calls) == 1


@responses.activate
@pytest.mark.parametrize(
    ("flags", "kept"),
    [
        # Prometheus 2.42 started without retention flags: the default 15 days apply.
        ({"storage.tsdb.retention": "0s", "storage.tsdb.retention.size": "0B"}, "15d"),
        ({"storage.tsdb.retention.time": "2w3d"}, "17d"),
        ({"storage.tsdb.retention.time": "1y"}, None),
        # Only a size bounds it: when the data starts is unknown.
        ({"storage.tsdb.retention": "0s", "storage.tsdb.retention.size": "50GB"}, None),
    ],
)
def test_the_retention_prometheus_flags_say(flags: dict[str, str], kept: str | None) -> None:
    document = load_fixture("prometheus", "status_flags")
    document["data"] |= {"storage.tsdb.retention.time": "0s"} | flags
    responses.get(QUERY_URL, json=load_fixture("prometheus", "spend_total"))
    responses.get(FLAGS_URL, json=document)
    if kept is None:
        assert meter().poll([MONTH]).lines
    else:
        with pytest.raises(SourceError, match=f"server keeps {kept} of samples"):
            meter().poll([MONTH])


@responses.activate
def test_a_server_that_does_not_say_is_not_second_guessed() -> None:
    responses.get(QUERY_URL, json=load_fixture("prometheus", "spend_total"))
    responses.get(FLAGS_URL, status=404, body="404 page not found\n")  # Thanos, Mimir
    assert [ln.amount for ln in meter().poll([MONTH]).lines] == [4]


@responses.activate
def test_a_configured_retention_wins_and_short_ranges_are_not_checked() -> None:
    responses.get(QUERY_URL, json=load_fixture("prometheus", "spend_total"))
    with pytest.raises(SourceError, match=r"keeps 7d of samples \(retention\)"):
        meter(retention="7d").poll([MONTH])
    assert meter(retention="30d").poll([MONTH]).lines
    # Joined to a bill three hours behind: nothing to check, nothing asked.
    joined = meter(retention="1d", metered_after="bill")
    joined.context = dataclasses.replace(joined.context, horizon=lambda: NOW - timedelta(hours=3))
    assert joined.poll([MONTH]).lines
    assert not any("/status/flags" in c.request.url for c in responses.calls)
