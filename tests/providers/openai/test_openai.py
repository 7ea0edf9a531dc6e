"""The ``openai`` provider against answers of OpenAI's Costs and Usage APIs, recorded in
``fixtures/`` (buckets of November 2026, the month of :data:`tests.support.llm.NOW`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import responses
import yaml

from budget_exporter.config.loader import load_config
from budget_exporter.core.errors import ConfigError, SourceError
from budget_exporter.core.model import Period
from budget_exporter.core.periods import window_at
from budget_exporter.providers.openai import split_line_item
from tests.support import llm
from tests.support.fake_upstream import FakeUpstream, Reply
from tests.support.fixtures import load_fixture, shifted
from tests.support.llm import MONTH, MONTH_START, make_provider, samples, value

BASE = "https://api.openai.test/v1"
COSTS = f"{BASE}/organization/costs"
USAGE = f"{BASE}/organization/usage/completions"
KEY = "sk-admin-test-0123456789abcdef"
BAD_PAGE = {"error": {"message": "bad page"}}


def answer(name: str) -> Any:
    """The recorded Costs or Usage API answer ``name`` (``fixtures/<name>.json``)."""
    return load_fixture("openai", name)


# Two pages grouped by project and line item: amounts as numbers and as strings, an empty
# day, a line with neither project nor line item.
COST_PAGES = {None: answer("costs_page1"), "page_AAA": answer("costs_page2")}


def query(call: Any) -> dict[str, list[str]]:
    return parse_qs(urlsplit(call.request.url).query)


@responses.activate
def test_costs_follow_every_page_and_sum_string_and_number_amounts() -> None:
    responses.add_callback(responses.GET, COSTS, callback=llm.paged(COST_PAGES, BAD_PAGE))
    provider = make_provider("openai", admin_key=KEY, base_url=BASE)

    result = provider.poll([MONTH])

    lines = {tuple(sorted(ln.dims.items())): (ln.amount, ln.currency) for ln in result.lines}
    assert lines == {
        (
            ("charge_category", "gpt-4o-2024-08-06, input"),
            ("model", "gpt-4o-2024-08-06"),
            ("sub_account_id", "proj_a"),
            ("token_type", "input"),
        ): (Decimal("0.56"), "USD"),
        (
            ("charge_category", "gpt-4o-2024-08-06, output"),
            ("model", "gpt-4o-2024-08-06"),
            ("sub_account_id", "proj_a"),
            ("token_type", "output"),
        ): (Decimal("12.50"), "USD"),
        (("charge_category", "web search tool calls"), ("sub_account_id", "proj_b")): (
            Decimal("1.25"),
            "USD",
        ),
        (): (Decimal("0.02"), "USD"),
    }
    assert sum(ln.amount for ln in result.lines) == Decimal("14.33")
    assert len(responses.calls) == 2
    first, second = (query(c) for c in responses.calls)
    assert first == {
        "start_time": [str(MONTH_START)],
        "bucket_width": ["1d"],
        "limit": ["31"],
        "group_by": ["project_id", "line_item"],
    }
    assert second["page"] == ["page_AAA"]
    assert second["group_by"] == ["project_id", "line_item"]
    assert all(c.request.headers["Authorization"] == f"Bearer {KEY}" for c in responses.calls)
    assert provider.requests_seen == ["ok", "ok"]
    assert result.samples == ()


@responses.activate
def test_project_filter_and_grouping_are_sent() -> None:
    responses.add(responses.GET, COSTS, json=answer("costs_proj_x"))
    provider = make_provider(
        "openai",
        admin_key=KEY,
        base_url=BASE,
        group_by=["project_id"],
        project_ids=["proj_x", "proj_y"],
    )
    result = provider.poll([MONTH])
    assert [(ln.dims, ln.amount) for ln in result.lines] == [({"sub_account_id": "proj_x"}, 3)]
    sent = query(responses.calls[0])
    assert sent["group_by"] == ["project_id"]
    assert sent["project_ids"] == ["proj_x", "proj_y"]


@responses.activate
def test_buckets_outside_the_month_are_ignored() -> None:
    # 99 on October 31st, 1 on November 4th.
    responses.add(responses.GET, COSTS, json=answer("costs_with_last_month"))
    result = make_provider("openai", admin_key=KEY, base_url=BASE).poll([MONTH])
    assert [ln.amount for ln in result.lines] == [Decimal(1)]


@responses.activate
def test_no_cost_at_all_is_a_real_zero_not_missing_data() -> None:
    responses.add(responses.GET, COSTS, json=answer("costs_empty_days"))
    result = make_provider("openai", admin_key=KEY, base_url=BASE).poll([MONTH])
    assert result.lines == ()


@pytest.mark.parametrize("status", [401, 403])
@responses.activate
def test_non_admin_key_is_a_clear_error(status: int) -> None:
    error = answer("error_insufficient_permissions")
    llm.assert_admin_key_refused("openai", COSTS, status, error, key=KEY, base_url=BASE)


@responses.activate
def test_429_is_retried_then_succeeds() -> None:
    throttled = answer("error_rate_limit")
    result = llm.assert_429_retried(
        "openai",
        COSTS,
        throttled,
        answer("costs_ungrouped_string"),
        admin_key=KEY,
        base_url=BASE,
        retries=2,
    )
    assert [ln.amount for ln in result.lines] == [Decimal("2.5")]


@responses.activate
def test_429_until_retries_run_out_fails_the_poll() -> None:
    responses.add(responses.GET, COSTS, status=429, headers={"Retry-After": "0"}, json={})
    provider = make_provider("openai", admin_key=KEY, base_url=BASE, retries=1)
    with pytest.raises(SourceError, match="HTTP 429"):
        provider.poll([MONTH])
    assert provider.requests_seen == ["throttled", "throttled"]


def test_retry_after_is_waited_for_on_a_real_connection(upstream: FakeUpstream) -> None:
    upstream.reply(
        Reply(status=429, headers={"Retry-After": "1"}, json=answer("error_rate_limit")),
        Reply(json=answer("costs_ungrouped")),
    )
    provider = make_provider("openai", admin_key=KEY, base_url=f"{upstream.url}/v1", retries=2)
    started = time.monotonic()
    result = provider.poll([MONTH])
    elapsed = time.monotonic() - started
    assert [ln.amount for ln in result.lines] == [Decimal(1)]
    assert elapsed >= 0.95, f"Retry-After: 1 not honoured ({elapsed:.2f}s)"
    assert len(upstream.seen) == 2
    assert provider.requests_seen == ["throttled", "ok"]


def broken(change: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    """``costs_ungrouped`` (one day, one result of 1 USD) after ``change``."""
    return llm.changed(answer("costs_ungrouped"), change)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("data"), "no data list"),
        (lambda d: llm.first_result(d)["amount"].update(value="12,5"), "not a number"),
        (lambda d: llm.first_result(d)["amount"].update(value=None), "missing"),
        (
            lambda d: d["data"][0].update(
                results=[{"amount": {"value": 1, "currency": "dollars"}}]
            ),
            "currency",
        ),
        (lambda d: d.update(data=[], has_more=True, next_page=None), "no next_page"),
    ],
)
@responses.activate
def test_malformed_answers_fail_the_poll(
    change: Callable[[dict[str, Any]], object], message: str
) -> None:
    llm.assert_malformed_fails(
        "openai", COSTS, broken(change), message, admin_key=KEY, base_url=BASE
    )


@responses.activate
def test_a_cursor_that_repeats_is_caught() -> None:
    repeating = broken(lambda d: d.update(data=[], has_more=True, next_page="same"))
    responses.add(responses.GET, COSTS, json=repeating)
    with pytest.raises(SourceError, match="same next_page twice"):
        make_provider("openai", admin_key=KEY, base_url=BASE).poll([MONTH])


# Completions usage grouped by model over two pages: gpt-4o on two days (cached input on
# the first), gpt-4o-mini, and a fine-tuned model no price table knows.
USAGE_PAGES = {None: answer("usage_page1"), "page_U2": answer("usage_page2")}


@responses.activate
def test_usage_tokens_and_labelled_estimate(caplog: pytest.LogCaptureFixture) -> None:
    responses.add(responses.GET, COSTS, json=answer("costs_proj_a"))
    responses.add_callback(responses.GET, USAGE, callback=llm.paged(USAGE_PAGES, BAD_PAGE))
    provider = make_provider(
        "openai",
        admin_key=KEY,
        base_url=BASE,
        group_by=["project_id"],
        usage_tokens=True,
        estimate_cost=True,
    )
    with caplog.at_level(logging.WARNING):
        result = provider.poll([MONTH])

    tokens = {
        (dict(s.labels)["model"], dict(s.labels)["token_type"]): s.value
        for s in result.samples
        if s.name == "budget_source_usage_tokens"
    }
    assert tokens[("gpt-4o-2024-08-06", "input")] == 800_000
    assert tokens[("gpt-4o-2024-08-06", "cached_input")] == 200_000
    assert tokens[("gpt-4o-2024-08-06", "output")] == 100_000
    assert tokens[("gpt-4o-mini-2024-07-18", "input")] == 1_000_000
    assert tokens[("ft:gpt-4o-mini:acme::abc", "output")] == 1000

    estimates = {
        dict(s.labels)["model"]: s
        for s in result.samples
        if s.name == "budget_source_estimated_cost_amount"
    }
    # gpt-4o: 0.8M x 2.50 + 0.2M x 1.25 + 0.1M x 10.00 = 3.25 USD
    assert estimates["gpt-4o-2024-08-06"].value == pytest.approx(3.25)
    # gpt-4o-mini: 1M x 0.15
    assert estimates["gpt-4o-mini-2024-07-18"].value == pytest.approx(0.15)
    assert dict(estimates["gpt-4o-mini-2024-07-18"].labels) == {
        "model": "gpt-4o-mini-2024-07-18",
        "currency": "USD",
        "price_table_date": "2025-11-25",
    }
    assert "ESTIMATE" in estimates["gpt-4o-2024-08-06"].documentation
    # The fine-tuned model has no price: left out, loudly, not exported as 0.
    assert "ft:gpt-4o-mini:acme::abc" not in estimates
    assert "ft:gpt-4o-mini:acme::abc" in caplog.text and "no price" in caplog.text
    # Estimates never become spend.
    assert [ln.amount for ln in result.lines] == [Decimal(4)]
    assert query(responses.calls[1])["group_by"] == ["model"]
    assert query(responses.calls[2])["page"] == ["page_U2"]


@responses.activate
def test_price_overrides_and_default_from_config(tmp_path: Path) -> None:
    table = tmp_path / "prices.yml"
    table.write_text(
        "taken: 2026-10-01\ncurrency: USD\nmodels:\n  gpt-4o: {input: 5, output: 20}\n"
    )
    responses.add(responses.GET, COSTS, json=answer("costs_empty_days"))
    responses.add(responses.GET, USAGE, json=answer("usage_base_and_unknown_model"))
    provider = make_provider(
        "openai",
        admin_key=KEY,
        base_url=BASE,
        estimate_cost=True,
        pricing={"file": str(table), "default": {"input": 1, "output": 1}},
    )
    result = provider.poll([MONTH])
    estimates = {dict(s.labels)["model"]: s for s in result.samples}
    assert estimates["gpt-4o"].value == pytest.approx(5.0)
    assert estimates["ft:x"].value == pytest.approx(1.0)
    assert dict(estimates["gpt-4o"].labels)["price_table_date"] == "2026-10-01"
    assert not any(s.name == "budget_source_usage_tokens" for s in result.samples)


@pytest.mark.parametrize(
    ("line_item", "expected"),
    [
        ("gpt-4o-2024-08-06, input", ("gpt-4o-2024-08-06", "input")),
        ("gpt-4o-mini, cached input", ("gpt-4o-mini", "cached_input")),
        ("o3, Output", ("o3", "output")),
        ("ft:gpt-4o-mini:acme::x1, input", ("ft:gpt-4o-mini:acme::x1", "input")),
        # Model ids without a digit or a colon: the "<model>, <kind>" shape names them.
        ("computer-use-preview, input", ("computer-use-preview", "input")),
        ("codex-mini-latest, cached input", ("codex-mini-latest", "cached_input")),
        ("omni-moderation-latest, input", ("omni-moderation-latest", "input")),
        ("gpt-4o, input (batch)", ("gpt-4o", "input_batch")),
        # Anything else names no model, whatever its characters.
        ("text-embedding-3-small", (None, None)),
        ("web search tool calls", (None, None)),
        ("Image models", (None, None)),
        ("assistants", (None, None)),
        ("file search tool calls, storage", (None, None)),
        (", input", (None, None)),
        ("gpt-4o,", (None, None)),
    ],
)
def test_line_items_name_models(line_item: str, expected: tuple[str | None, str | None]) -> None:
    assert split_line_item(line_item) == expected


@responses.activate
def test_a_model_without_digits_gets_its_model_label() -> None:
    responses.add(responses.GET, COSTS, json=answer("costs_models_without_digits"))
    result = make_provider("openai", admin_key=KEY, base_url=BASE).poll([MONTH])
    models = {ln.dims["charge_category"]: ln.dims.get("model") for ln in result.lines}
    assert models == {
        "computer-use-preview, input": "computer-use-preview",
        "omni-moderation-latest, input": "omni-moderation-latest",
        "web search tool calls": None,
    }


@responses.activate
def test_a_failing_usage_request_keeps_the_cost_lines(caplog: pytest.LogCaptureFixture) -> None:
    costs = answer("costs_one_line")
    usage_page = answer("usage_one_model")
    denied = answer("error_missing_usage_scope")
    llm.assert_usage_is_optional(
        "openai", COSTS, USAGE, costs, usage_page, denied, caplog, key=KEY, base_url=BASE
    )


def test_config_reads_the_key_from_a_file_and_from_the_environment(tmp_path: Path) -> None:
    (tmp_path / "key").write_text(KEY + "\n")
    path = tmp_path / "c.yml"
    path.write_text(
        "sources:\n"
        "  - {name: a, provider: openai, admin_key_file: key}\n"
        "  - {name: b, provider: openai, admin_key: '${OPENAI_ADMIN_KEY}'}\n"
    )
    config = load_config(path, env={"OPENAI_ADMIN_KEY": "sk-admin-from-env"})
    assert [s.admin_key for s in config.sources] == [KEY, "sk-admin-from-env"]
    assert {KEY, "sk-admin-from-env"} <= config.secrets


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "admin_key: field required"),
        ({"admin_key": "k", "page_size": 500}, "page_size"),
        ({"admin_key": "k", "group_by": ["model"]}, "group_by"),
        ({"admin_key": "k", "base_url": "http://proxy.example.com/v1"}, "must use https"),
        (
            {"admin_key": "k", "pricing": {"models": {"x": {"input": 1, "output": 2}}}},
            "sources[0].pricing: pricing is only used with estimate_cost: true",
        ),
        (
            {"admin_key": "k", "estimate_cost": True, "pricing": {"file": "/nonexistent.yml"}},
            "sources[0].pricing.file: price table /nonexistent.yml",
        ),
        (
            {"admin_key": "k", "estimate_cost": True, "pricing": {"models": {"x": {"input": 3}}}},
            "sources[0].pricing.models.x.output: field required",
        ),
        (
            {"admin_key": "k", "estimate_cost": True, "pricing": {"default": {"input": 3}}},
            "sources[0].pricing.default.output: field required",
        ),
    ],
)
def test_config_errors_are_one_clear_line(
    tmp_path: Path, fields: dict[str, Any], message: str
) -> None:
    path = tmp_path / "c.yml"
    path.write_text(yaml.safe_dump({"sources": [{"name": "a", "provider": "openai", **fields}]}))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_relative_price_table_is_relative_to_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "etc"
    (folder / "tables").mkdir(parents=True)
    (folder / "tables" / "prices.yml").write_text(
        "taken: 2026-10-01\nmodels:\n  acme-llm: {input: 1, output: 2}\n"
    )
    path = folder / "c.yml"
    path.write_text(
        "sources:\n"
        "  - name: a\n"
        "    provider: openai\n"
        "    admin_key: k\n"
        "    estimate_cost: true\n"
        "    pricing: {file: tables/prices.yml}\n"
    )
    monkeypatch.chdir(tmp_path)  # the working directory has no tables/prices.yml
    source = load_config(path).sources[0]
    assert source.pricing.file == str(folder / "tables" / "prices.yml")
    table = source.price_table()
    assert table.taken.isoformat() == "2026-10-01" and table.knows("acme-llm")
    # ... and a relative path that is only there in the working directory is not used.
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "other.yml").write_text("taken: 2026-10-01\n")
    path.write_text(path.read_text().replace("tables/prices.yml", "tables/other.yml"))
    with pytest.raises(ConfigError, match=r"sources\[0\]\.pricing\.file: price table .*etc"):
        load_config(path)


def this_month(document: dict[str, Any]) -> dict[str, Any]:
    """A recorded answer moved to the real current month, which the exporter asks for."""
    return shifted(document, window_at(Period.MONTHLY, datetime.now(UTC)).start - MONTH.start)


def test_whole_exporter_against_a_loopback_openai(tmp_path: Path, upstream: FakeUpstream) -> None:
    upstream.reply(
        Reply(json=this_month(answer("costs_two_projects_page1"))),
        Reply(json=this_month(answer("costs_two_projects_page2"))),
    )
    config = tmp_path / "openai.yml"
    config.write_text(
        f"""
global: {{retries: 1, retry_backoff: 10ms}}
sources:
  - name: openai
    provider: openai
    admin_key: {KEY}
    base_url: {upstream.url}/v1
budgets:
  - {{name: openai, limit: 500, currency: USD, sources: [openai]}}
  - {{name: proj-a, limit: 200, currency: USD, sources: [openai], match: {{sub_account_id: proj_a}}}}
"""
    )
    _, metrics = llm.run_once_checked(config, secret=KEY)
    assert value(metrics, "budget_spend_amount", budget="openai") == pytest.approx(120.25)
    assert value(metrics, "budget_spend_amount", budget="proj-a") == pytest.approx(100.25)
    assert value(metrics, "budget_usage_ratio", budget="openai") == pytest.approx(120.25 / 500)
    assert llm.by_label(metrics, "budget_source_cost_amount", "sub_account_id") == {
        "proj_a": pytest.approx(100.25),
        "proj_b": pytest.approx(20.0),
    }
    costs = samples(metrics, "budget_source_cost_amount")
    line = next(dict(ls) for ls in costs if dict(ls)["sub_account_id"] == "proj_a")
    assert line["model"] == "gpt-4o-2024-08-06" and line["token_type"] == "output"
    assert line["currency"] == "USD" and line["provider"] == "openai"
    assert value(metrics, "budget_source_up", source="openai") == 1
    assert value(metrics, "budget_source_api_requests_total", source="openai", status="ok") == 2
    assert [s.query.get("page") for s in upstream.seen] == [None, "p2"]
    assert all(s.headers.get("Authorization") == f"Bearer {KEY}" for s in upstream.seen)


def test_whole_exporter_keeps_a_source_up_when_only_usage_is_refused(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    upstream.reply(
        Reply(json=this_month(answer("costs_proj_a_string"))),
        Reply(status=403, json=answer("error_missing_usage_scope")),
    )
    config = tmp_path / "openai.yml"
    config.write_text(
        f"""
global: {{retries: 0}}
sources:
  - {{name: openai, provider: openai, admin_key: {KEY}, base_url: '{upstream.url}/v1', usage_tokens: true}}
budgets:
  - {{name: openai, limit: 500, currency: USD}}
"""
    )
    proc, metrics = llm.run_once_checked(config, secret=KEY)
    assert value(metrics, "budget_source_up", source="openai") == 1
    assert value(metrics, "budget_spend_amount", budget="openai") == pytest.approx(42.0)
    assert not samples(metrics, "budget_source_usage_tokens")
    assert (
        value(metrics, "budget_source_api_requests_total", source="openai", status="client_error")
        == 1
    )
    assert "token usage not updated" in proc.stderr and "HTTP 403" in proc.stderr
    assert [s.path for s in upstream.seen] == [
        "/v1/organization/costs",
        "/v1/organization/usage/completions",
    ]


def test_whole_exporter_reports_a_refused_key_as_source_down(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    upstream.default = Reply(status=401, json=answer("error_invalid_api_key"))
    config = tmp_path / "openai.yml"
    config.write_text(
        f"""
global: {{retries: 0}}
sources:
  - {{name: openai, provider: openai, admin_key: {KEY}, base_url: '{upstream.url}/v1'}}
budgets:
  - {{name: openai, limit: 500, currency: USD}}
"""
    )
    proc, metrics = llm.run_once_checked(config, secret=KEY, returncode=1)
    assert value(metrics, "budget_source_up", source="openai") == 0
    assert (
        value(metrics, "budget_source_api_requests_total", source="openai", status="client_error")
        == 1
    )
    assert not samples(metrics, "budget_spend_amount")  # no fake zero
    assert "Admin key" in proc.stderr and KEY not in proc.stderr
