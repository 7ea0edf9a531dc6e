"""The ``anthropic`` provider against answers of Anthropic's Admin API (cost report, messages
usage report), recorded in ``fixtures/`` (buckets of November 2026, the month of
:data:`tests.support.llm.NOW`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import responses

from budget_exporter.core.model import Period
from budget_exporter.core.periods import window_at
from tests.support import llm
from tests.support.fake_upstream import FakeUpstream, Reply
from tests.support.fixtures import load_fixture, shifted
from tests.support.llm import MONTH, make_provider, value

BASE = "https://api.anthropic.test"
COSTS = f"{BASE}/v1/organizations/cost_report"
USAGE = f"{BASE}/v1/organizations/usage_report/messages"
KEY = "sk-ant-admin01-test-abcdefghijklmnop"
BAD_PAGE = {"type": "error", "error": {"type": "invalid_request_error"}}


def rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def answer(name: str) -> Any:
    """The recorded cost or usage report ``name`` (``fixtures/<name>.json``)."""
    return load_fixture("anthropic", name)


SONNET = "claude-sonnet-4-20250514"
# Two pages grouped by workspace and description, amounts in cents: input tokens of one
# workspace on two days, output tokens and web search of the default workspace, a 1h
# cache write.
COST_PAGES = {None: answer("cost_report_page1"), "page_Mg==": answer("cost_report_page2")}


def raw_query(call: Any) -> str:
    return urlsplit(call.request.url).query


@responses.activate
def test_cost_report_in_cents_over_every_page() -> None:
    responses.add_callback(responses.GET, COSTS, callback=llm.paged(COST_PAGES, BAD_PAGE))
    provider = make_provider("anthropic", admin_key=KEY, base_url=BASE)

    result = provider.poll([MONTH])

    lines = {tuple(sorted(ln.dims.items())): ln.amount for ln in result.lines}
    assert lines == {
        (
            ("charge_category", "tokens"),
            ("model", SONNET),
            ("sub_account_id", "wrkspc_01A"),
            ("token_type", "input"),
        ): Decimal("2.00"),  # 123.78912 + 76.21088 cents
        (
            ("charge_category", "tokens"),
            ("model", SONNET),
            ("sub_account_id", "default"),
            ("token_type", "output"),
        ): Decimal("2.50"),
        (("charge_category", "web_search"), ("sub_account_id", "default")): Decimal("10"),
        (
            ("charge_category", "tokens"),
            ("model", SONNET),
            ("sub_account_id", "wrkspc_01A"),
            ("token_type", "cache_write_1h"),
        ): Decimal("0.105"),
    }
    assert {ln.currency for ln in result.lines} == {"USD"}
    assert len(responses.calls) == 2
    first = parse_qs(raw_query(responses.calls[0]))
    assert first == {
        "starting_at": [rfc3339(MONTH.start)],
        "bucket_width": ["1d"],
        "limit": ["31"],
        "group_by[]": ["workspace_id", "description"],
    }
    # The bracketed key goes on the wire as the API documents it (brackets percent-encoded).
    assert "group_by%5B%5D=workspace_id&group_by%5B%5D=description" in raw_query(responses.calls[0])
    assert parse_qs(raw_query(responses.calls[1]))["page"] == ["page_Mg=="]
    for call in responses.calls:
        assert call.request.headers["x-api-key"] == KEY
        assert call.request.headers["anthropic-version"] == "2023-06-01"
        assert "Authorization" not in call.request.headers


@responses.activate
def test_without_description_grouping_there_is_only_the_workspace() -> None:
    responses.add(responses.GET, COSTS, json=answer("cost_report_by_workspace"))
    provider = make_provider("anthropic", admin_key=KEY, base_url=BASE, group_by=["workspace_id"])
    result = provider.poll([MONTH])
    assert [(ln.dims, ln.amount) for ln in result.lines] == [
        ({"sub_account_id": "default"}, Decimal("0.995"))
    ]
    assert parse_qs(raw_query(responses.calls[0]))["group_by[]"] == ["workspace_id"]


@responses.activate
def test_empty_month_gives_no_lines_and_no_error() -> None:
    responses.add(responses.GET, COSTS, json=answer("cost_report_empty_days"))
    assert make_provider("anthropic", admin_key=KEY, base_url=BASE).poll([MONTH]).lines == ()


@pytest.mark.parametrize("status", [401, 403])
@responses.activate
def test_non_admin_key_is_a_clear_error(status: int) -> None:
    error = answer("error_authentication")
    llm.assert_admin_key_refused("anthropic", COSTS, status, error, key=KEY, base_url=BASE)


@responses.activate
def test_429_with_retry_after_is_retried() -> None:
    throttled = answer("error_rate_limit")
    result = llm.assert_429_retried(
        "anthropic",
        COSTS,
        throttled,
        answer("cost_report_web_search"),
        admin_key=KEY,
        base_url=BASE,
        retries=3,
    )
    assert [ln.amount for ln in result.lines] == [Decimal(5)]


def broken(change: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    """``cost_report_web_search`` (one day, one result of 500 cents) after ``change``."""
    return llm.changed(answer("cost_report_web_search"), change)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("data"), "no data list"),
        (lambda d: llm.first_result(d).update(amount="1.2.3"), "not a number"),
        (lambda d: d.update(data=[{"results": []}]), "no starting_at"),
        (lambda d: d.update(data=[{"starting_at": "yesterday", "results": []}]), "RFC 3339"),
        (lambda d: llm.first_result(d).update(currency=None), "currency"),
    ],
)
@responses.activate
def test_malformed_answers_fail_the_poll(
    change: Callable[[dict[str, Any]], object], message: str
) -> None:
    llm.assert_malformed_fails(
        "anthropic", COSTS, broken(change), message, admin_key=KEY, base_url=BASE
    )


@responses.activate
def test_usage_tokens_over_pages_and_estimate(caplog: pytest.LogCaptureFixture) -> None:
    responses.add(responses.GET, COSTS, json=answer("cost_report_empty_days"))
    # Messages usage by model over two pages: Sonnet 4 on two days (cache reads on the
    # first, 5m and 1h cache writes on the second), and a model no price table knows.
    usage_pages = {None: answer("usage_report_page1"), "p2": answer("usage_report_page2")}
    responses.add_callback(responses.GET, USAGE, callback=llm.paged(usage_pages, BAD_PAGE))
    provider = make_provider(
        "anthropic",
        admin_key=KEY,
        base_url=BASE,
        usage_tokens=True,
        estimate_cost=True,
    )
    with caplog.at_level(logging.WARNING):
        result = provider.poll([MONTH])
    tokens = {
        dict(s.labels)["token_type"]: s.value
        for s in result.samples
        if s.name == "budget_source_usage_tokens" and dict(s.labels)["model"] == SONNET
    }
    assert tokens == {
        "input": 1_000_000,
        "cached_input": 1_000_000,
        "cache_write": 100_000,
        "cache_write_1h": 100_000,
        "output": 100_000,
    }
    estimates = {
        dict(s.labels)["model"]: s.value
        for s in result.samples
        if s.name == "budget_source_estimated_cost_amount"
    }
    # claude-sonnet-4: 1M x 3 + 1M x 0.30 + 0.1M x 3.75 + 0.1M x 6 + 0.1M x 15 = 5.775
    assert estimates == {SONNET: pytest.approx(5.775)}
    assert "claude-next-1" in caplog.text
    assert parse_qs(raw_query(responses.calls[1]))["group_by[]"] == ["model"]
    assert parse_qs(raw_query(responses.calls[2]))["page"] == ["p2"]


@responses.activate
def test_a_failing_usage_request_keeps_the_cost_lines(caplog: pytest.LogCaptureFixture) -> None:
    costs = answer("cost_report_one_line")
    usage_page = answer("usage_report_one_model")
    denied = answer("error_permission")
    llm.assert_usage_is_optional(
        "anthropic", COSTS, USAGE, costs, usage_page, denied, caplog, key=KEY, base_url=BASE
    )


@responses.activate
def test_a_price_table_that_cannot_be_read_at_poll_time_only_loses_estimates(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    table = tmp_path / "prices.yml"
    table.write_text(f"taken: 2026-10-01\nmodels:\n  {SONNET}: {{input: 1, output: 1}}\n")
    responses.add(responses.GET, COSTS, json=answer("cost_report_one_line"))
    responses.add(responses.GET, USAGE, json=answer("usage_report_one_model"))
    provider = make_provider(
        "anthropic",
        admin_key=KEY,
        base_url=BASE,
        estimate_cost=True,
        pricing={"file": str(table)},
    )
    table.unlink()  # removed after the configuration was loaded
    with caplog.at_level(logging.WARNING):
        result = provider.poll([MONTH])
    assert [ln.amount for ln in result.lines] == [Decimal("2.50")]
    assert result.samples == ()
    assert "prices.yml" in caplog.text and "cost lines are still reported" in caplog.text


def test_whole_exporter_against_a_loopback_anthropic(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    # The exporter asks for the real current month: move the recorded buckets to it.
    by = window_at(Period.MONTHLY, datetime.now(UTC)).start - MONTH.start
    upstream.reply(
        Reply(json=shifted(answer("cost_report_two_workspaces_page1"), by)),
        Reply(json=shifted(answer("cost_report_two_workspaces_page2"), by)),
        Reply(json=shifted(answer("usage_report_cached"), by)),
    )
    config = tmp_path / "anthropic.yml"
    config.write_text(
        f"""
global: {{retries: 1, retry_backoff: 10ms}}
sources:
  - name: claude
    provider: anthropic
    admin_key: {KEY}
    base_url: {upstream.url}
    usage_tokens: true
budgets:
  - {{name: claude, limit: 100, currency: USD, sources: [claude]}}
  - {{name: claude-ml, limit: 50, currency: USD, sources: [claude], match: {{sub_account_id: wrkspc_ml}}}}
"""
    )
    _, metrics = llm.run_once_checked(config, secret=KEY)
    assert value(metrics, "budget_spend_amount", budget="claude") == pytest.approx(50.005)
    assert value(metrics, "budget_spend_amount", budget="claude-ml") == pytest.approx(42.0)
    costs = llm.by_label(metrics, "budget_source_cost_amount", "sub_account_id")
    assert costs == {"wrkspc_ml": pytest.approx(42.0), "default": pytest.approx(8.005)}
    assert value(metrics, "budget_source_usage_tokens", source="claude", token_type="output") == 30
    assert (
        value(metrics, "budget_source_usage_tokens", source="claude", token_type="cached_input")
        == 20
    )
    assert value(metrics, "budget_source_up", source="claude") == 1
    assert value(metrics, "budget_source_api_requests_total", source="claude", status="ok") == 3
    assert [s.path for s in upstream.seen] == [
        "/v1/organizations/cost_report",
        "/v1/organizations/cost_report",
        "/v1/organizations/usage_report/messages",
    ]
    assert upstream.seen[1].query["page"] == "page_two"
    assert all(s.headers.get("x-api-key") == KEY for s in upstream.seen)
