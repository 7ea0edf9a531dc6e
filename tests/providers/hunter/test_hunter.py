"""The ``hunter`` provider: credit quotas, their cost, and a key kept out of sight.

Answers of Hunter's account endpoint are recorded in ``fixtures/``: a plan with a quota per
kind of request (searches, verifications, and the deprecated ``calls`` sum), a plan with one
``credits`` quota and a credit pack (``remaining``), an old plan with ``calls`` only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests
import responses
import yaml

from budget_exporter.config.loader import load_config
from budget_exporter.core.errors import ConfigError, SourceError
from budget_exporter.core.logformat import LogfmtFormatter
from tests.support import llm
from tests.support.clock import Clock
from tests.support.fake_upstream import FakeUpstream, Reply
from tests.support.fixtures import load_fixture
from tests.support.llm import MONTH, NOW, make_provider, parse_metrics, value

BASE = "https://api.hunter.test/v2"
ACCOUNT = f"{BASE}/account"
KEY = "hunterkey0123456789abcdef0123456789abcdef"

PER_BUCKET = load_fixture("hunter", "account_per_bucket")
CREDITS = load_fixture("hunter", "account_credits")


def quotas(result: Any) -> dict[tuple[str, str], float]:
    return {
        (s.name.removeprefix("budget_source_quota_"), dict(s.labels).get("quota", "")): s.value
        for s in result.samples
    }


@responses.activate
def test_per_bucket_quotas_reset_and_spend() -> None:
    responses.add(responses.GET, ACCOUNT, json=PER_BUCKET)
    provider = make_provider("hunter", api_key=KEY, base_url=BASE, price_per_credit="0.098")

    result = provider.poll([MONTH])

    assert quotas(result) == {
        ("used", "searches"): 320,
        ("limit", "searches"): 500,
        ("warning_threshold_ratio", "searches"): 0.8,
        ("used", "verifications"): 140,
        ("limit", "verifications"): 1000,
        ("warning_threshold_ratio", "verifications"): 0.8,
        ("reset_timestamp_seconds", ""): datetime(2026, 12, 1, tzinfo=UTC).timestamp(),
    }
    # `calls` is a deprecated sum of the buckets: not a quota of its own, not counted twice.
    assert {(ln.dims["charge_category"], ln.amount, ln.currency) for ln in result.lines} == {
        ("searches", Decimal("31.360"), "USD"),
        ("verifications", Decimal("13.720"), "USD"),
    }
    assert responses.calls[0].request.params == {"api_key": KEY}


@responses.activate
def test_single_credits_bucket_with_remaining_packs() -> None:
    responses.add(responses.GET, ACCOUNT, json=CREDITS)
    provider = make_provider(
        "hunter", api_key=KEY, base_url=BASE, price_per_credit=0.04, quota_warning_ratio=0.9
    )
    result = provider.poll([MONTH])
    assert quotas(result) == {
        ("used", "credits"): 1200.5,
        ("limit", "credits"): 7200.5,  # used + remaining (a credit pack on top of 5000)
        ("warning_threshold_ratio", "credits"): 0.9,
        ("reset_timestamp_seconds", ""): datetime(2026, 12, 14, tzinfo=UTC).timestamp(),
    }
    assert [(ln.amount, ln.dims) for ln in result.lines] == [
        (Decimal("48.020"), {"charge_category": "credits"})
    ]


@responses.activate
def test_per_quota_prices_and_a_quota_without_price(caplog: pytest.LogCaptureFixture) -> None:
    responses.add(responses.GET, ACCOUNT, json=PER_BUCKET)
    provider = make_provider("hunter", api_key=KEY, base_url=BASE, prices={"searches": 0.1})
    with caplog.at_level(logging.WARNING):
        result = provider.poll([MONTH])
    assert [(ln.dims["charge_category"], ln.amount) for ln in result.lines] == [
        ("searches", Decimal("32.0"))
    ]
    assert "verifications" in caplog.text and "not counted" in caplog.text
    assert ("used", "verifications") in quotas(result)


@responses.activate
def test_only_the_deprecated_calls_bucket_is_still_a_quota() -> None:
    responses.add(responses.GET, ACCOUNT, json=load_fixture("hunter", "account_calls_only"))
    result = make_provider("hunter", api_key=KEY, base_url=BASE, price_per_credit=0).poll([MONTH])
    assert quotas(result) == {
        ("used", "calls"): 10,
        ("limit", "calls"): 50,
        ("warning_threshold_ratio", "calls"): 0.8,
    }
    assert [ln.amount for ln in result.lines] == [Decimal(0)]


def credits_bucket(document: dict[str, Any]) -> dict[str, Any]:
    return document["data"]["requests"]["credits"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(errors=[{"id": "x"}]) or d.pop("data"), "no data object"),
        (lambda d: d["data"].pop("requests"), "no quota"),
        (lambda d: credits_bucket(d).update(used="many"), "credits.used"),
        (lambda d: credits_bucket(d).pop("available"), "credits.available is missing"),
    ],
)
@responses.activate
def test_malformed_answers_fail_the_poll(
    change: Callable[[dict[str, Any]], object], message: str
) -> None:
    document = load_fixture("hunter", "account_credits")
    change(document)
    responses.add(responses.GET, ACCOUNT, json=document)
    with pytest.raises(SourceError, match=message):
        make_provider("hunter", api_key=KEY, base_url=BASE, price_per_credit=1).poll([MONTH])


@responses.activate
def test_401_and_429_messages_never_carry_the_key() -> None:
    responses.add(
        responses.GET,
        ACCOUNT,
        status=401,
        json={
            "errors": [
                {
                    "id": "authentication_failed",
                    "details": f"No user found for the API key supplied ({ACCOUNT}?api_key={KEY})",
                }
            ]
        },
    )
    provider = make_provider("hunter", api_key=KEY, base_url=BASE, price_per_credit=1, retries=1)
    with pytest.raises(SourceError) as caught:
        provider.poll([MONTH])
    assert "HTTP 401" in str(caught.value) and "Hunter API key" in str(caught.value)
    assert KEY not in str(caught.value)

    responses.replace(responses.GET, ACCOUNT, status=429, headers={"Retry-After": "0"}, json={})
    with pytest.raises(SourceError) as caught:
        provider.poll([MONTH])
    assert "HTTP 429" in str(caught.value) and KEY not in str(caught.value)
    assert provider.requests_seen == ["client_error", "throttled", "throttled"]


@responses.activate
def test_connection_errors_never_carry_the_key() -> None:
    # requests puts the whole URL, query string included, in its exception text.
    error = requests.ConnectionError(f"Max retries exceeded with url: /v2/account?api_key={KEY}")
    responses.add(responses.GET, ACCOUNT, body=error)
    with pytest.raises(SourceError) as caught:
        make_provider("hunter", api_key=KEY, base_url=BASE, price_per_credit=1).poll([MONTH])
    assert KEY not in str(caught.value)
    assert "/v2/account" in str(caught.value)


def hunter_config(base_url: str, key_line: str = f"api_key: {KEY}") -> str:
    return f"""
global: {{retries: 1, retry_backoff: 10ms}}
sources:
  - name: hunter
    provider: hunter
    {key_line}
    base_url: {base_url}
    price_per_credit: 0.1
budgets:
  - {{name: hunter, limit: 200, currency: USD, sources: [hunter]}}
"""


@responses.activate
def test_engine_keeps_the_key_out_of_state_metrics_and_logs(
    make_engine: Any, caplog: pytest.LogCaptureFixture
) -> None:
    responses.add(
        responses.GET,
        ACCOUNT,
        status=401,
        body=f"Invalid API key {KEY} for {ACCOUNT}?api_key={KEY}",
    )
    engine = make_engine(hunter_config(BASE), Clock(NOW.timestamp()))
    handler = logging.StreamHandler()
    handler.setFormatter(LogfmtFormatter())
    records: list[str] = []
    handler.emit = lambda record: records.append(handler.format(record))  # type: ignore[method-assign]
    logging.getLogger("budget_exporter").addHandler(handler)
    try:
        with caplog.at_level(logging.DEBUG, logger="budget_exporter"):
            assert engine.poll_all_once() is False
    finally:
        logging.getLogger("budget_exporter").removeHandler(handler)
    state = engine.snapshot.states[0]
    assert state.up is False
    assert "HTTP 401" in (state.last_error or "")
    assert KEY not in (state.last_error or "")
    assert records and all(KEY not in line for line in records)
    assert KEY not in engine.snapshot.rendered.text.decode()

    responses.replace(responses.GET, ACCOUNT, json=PER_BUCKET)
    assert engine.poll_all_once() is True
    text = engine.snapshot.rendered.text.decode()
    assert KEY not in text
    metrics = parse_metrics(text)
    assert value(metrics, "budget_spend_amount", budget="hunter") == pytest.approx(46.0)


def test_whole_exporter_against_a_loopback_hunter(tmp_path: Path, upstream: FakeUpstream) -> None:
    upstream.reply(
        Reply(status=500, body=f"<html>oops {KEY}</html>".encode()),
        Reply(json=PER_BUCKET),
    )
    key_file = tmp_path / "hunter.key"
    key_file.write_text(KEY + "\n")
    config = tmp_path / "hunter.yml"
    config.write_text(hunter_config(f"{upstream.url}/v2", "api_key_file: hunter.key"))
    _, metrics = llm.run_once_checked(config, "--log.level=debug", secret=KEY)
    assert [s.query.get("api_key") for s in upstream.seen] == [KEY, KEY]
    assert value(metrics, "budget_spend_amount", budget="hunter") == pytest.approx(46.0)
    assert value(metrics, "budget_usage_ratio", budget="hunter") == pytest.approx(0.23)
    costs = llm.by_label(metrics, "budget_source_cost_amount", "charge_category")
    assert costs == {"searches": pytest.approx(32.0), "verifications": pytest.approx(14.0)}
    assert value(metrics, "budget_source_quota_used", quota="searches") == 320
    assert value(metrics, "budget_source_quota_limit", quota="verifications") == 1000
    assert value(metrics, "budget_source_quota_reset_timestamp_seconds", source="hunter") == (
        datetime(2026, 12, 1, tzinfo=UTC).timestamp()
    )
    assert value(metrics, "budget_source_up", source="hunter") == 1
    by_status = llm.by_label(metrics, "budget_source_api_requests_total", "status")
    assert by_status["server_error"] == 1 and by_status["ok"] == 1


def test_whole_exporter_failing_hunter_logs_no_key(tmp_path: Path, upstream: FakeUpstream) -> None:
    upstream.default = Reply(status=403, body=f"forbidden: api_key={KEY}".encode())
    config = tmp_path / "hunter.yml"
    config.write_text(hunter_config(f"{upstream.url}/v2"))
    flags = ("--log.level=debug", "--log.format=json")
    proc, metrics = llm.run_once_checked(config, *flags, secret=KEY, returncode=1)
    assert "HTTP 403" in proc.stderr
    assert value(metrics, "budget_source_up", source="hunter") == 0


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"api_key": "k"}, "price_per_credit"),
        ({"api_key": "k", "price_per_credit": -1}, "must not be negative"),
        ({"api_key": "k", "prices": {"searches": -2}}, "must not be negative"),
        ({"price_per_credit": 1}, "api_key: field required"),
        ({"api_key": "k", "price_per_credit": 1, "base_url": "http://hunter.io/v2"}, "https"),
        (
            {"api_key": "k", "price_per_credit": 1, "quota_warning_ratio": 1.5},
            "quota_warning_ratio",
        ),
    ],
)
def test_config_errors(tmp_path: Path, fields: dict[str, Any], message: str) -> None:
    path = tmp_path / "c.yml"
    path.write_text(yaml.safe_dump({"sources": [{"name": "h", "provider": "hunter", **fields}]}))
    with pytest.raises(ConfigError, match=message):
        load_config(path)
