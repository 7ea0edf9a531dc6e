"""Helpers for the LLM/SaaS provider, check API and guard tests."""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import responses
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from budget_exporter.core.errors import SourceError
from budget_exporter.core.model import Period, PollResult
from budget_exporter.core.periods import window_at
from budget_exporter.providers import get_provider
from budget_exporter.providers.base import ProviderContext
from tests.support.exporter import run

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)
MONTH = window_at(Period.MONTHLY, NOW)
MONTH_START = int(MONTH.start.timestamp())
DAY = 86_400


def make_provider(name: str, *, retries: int = 0, timeout: float = 2.0, **fields: Any) -> Any:
    """A provider instance with a test context; ``.requests_seen`` lists request outcomes."""
    cls = get_provider(name)
    config = cls.config_model.model_validate({"name": "src", "provider": name, **fields})
    seen: list[str] = []
    context = ProviderContext(
        source="src",
        timeout=timedelta(seconds=timeout),
        retries=retries,
        retry_backoff=timedelta(milliseconds=1),
        max_retry_after=timedelta(seconds=5),
        record_request=seen.append,
        now=lambda: NOW,
        logger=logging.getLogger(f"budget_exporter.{name}-test"),
    )
    provider = cls(config, context)
    provider.requests_seen = seen
    return provider


Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_metrics(text: str) -> Series:
    """``{(sample name, labels): value}`` from the Prometheus text format."""
    out: Series = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


APP_SPEND_TOTAL = "budget_app_spend_amount_total"


def app_spend(registry: CollectorRegistry) -> dict[tuple[str, str, str], float]:
    """The application's spend counter in ``registry``: ``{(budget, model, currency): value}``."""
    series = parse_metrics(generate_latest(registry).decode())
    return {
        (labels["budget"], labels["model"], labels["currency"]): value
        for (name, frozen), value in series.items()
        if name == APP_SPEND_TOTAL
        for labels in [dict(frozen)]
    }


def value(series: Series, name: str, **labels: str) -> float:
    """The one sample of ``name`` whose labels include ``labels``."""
    found = [
        v
        for (n, ls), v in series.items()
        if n == name and all((k, val) in ls for k, val in labels.items())
    ]
    assert len(found) == 1, f"{len(found)} samples of {name} with {labels}: {sorted(series)}"
    return found[0]


def samples(series: Series, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {ls: v for (n, ls), v in series.items() if n == name}


def by_label(series: Series, name: str, label: str) -> dict[str, float]:
    """``{value of label: sample value}`` over the samples of ``name``."""
    return {dict(ls)[label]: v for ls, v in samples(series, name).items()}


def paged(pages: dict[str | None, dict[str, Any]], unknown: dict[str, Any]) -> Any:
    """A ``responses`` callback answering each ``page`` cursor with its page, and a
    cursor it does not know with 400 and the API's error body ``unknown``."""

    def answer(request: Any) -> tuple[int, dict[str, str], str]:
        cursor = parse_qs(urlsplit(request.url).query).get("page", [None])[0]
        if cursor not in pages:
            return 400, {}, json.dumps(unknown)
        return 200, {"Content-Type": "application/json"}, json.dumps(pages[cursor])

    return answer


def assert_admin_key_refused(
    name: str, url: str, status: int, error: dict[str, Any], *, key: str, base_url: str
) -> None:
    """When ``url`` (the cost endpoint, mocked with ``responses``) answers ``status``
    401 or 403 with the API's ``error`` body, the poll fails saying an Admin key is
    needed, never shows the key, and is not retried."""
    responses.add(responses.GET, url, status=status, json=error)
    provider = make_provider(name, admin_key=key, base_url=base_url, retries=2)
    with pytest.raises(SourceError) as caught:
        provider.poll([MONTH])
    message = str(caught.value)
    assert f"HTTP {status}" in message
    assert "Admin key" in message
    assert key not in message
    assert provider.requests_seen == ["client_error"]  # 4xx is not retried


def assert_429_retried(
    name: str, url: str, throttled: dict[str, Any], answer: dict[str, Any], **fields: Any
) -> PollResult:
    """When ``url`` (mocked with ``responses``) first answers 429 with ``Retry-After: 1``
    and the API's ``throttled`` body, then ``answer``, the poll is retried once and
    succeeds; its result."""
    responses.add(responses.GET, url, status=429, headers={"Retry-After": "1"}, json=throttled)
    responses.add(responses.GET, url, json=answer)
    provider = make_provider(name, **fields)
    result = provider.poll([MONTH])
    assert provider.requests_seen == ["throttled", "ok"]
    return result


def changed(document: dict[str, Any], change: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    """``document`` after ``change`` (which edits it in place)."""
    change(document)
    return document


def first_result(document: dict[str, Any]) -> dict[str, Any]:
    """The first result of the first bucket of a cost report (OpenAI's and Anthropic's)."""
    return document["data"][0]["results"][0]


def assert_malformed_fails(
    name: str, url: str, document: dict[str, Any], message: str, **fields: Any
) -> None:
    """When ``url`` (mocked with ``responses``) answers ``document``, the poll fails with
    a :class:`SourceError` matching ``message``."""
    responses.add(responses.GET, url, json=document)
    with pytest.raises(SourceError, match=message):
        make_provider(name, **fields).poll([MONTH])


def queued(*replies: tuple[int, dict[str, Any]]) -> Any:
    """A ``responses`` callback answering each request with the next ``(status, body)``."""
    pending = list(replies)

    def answer(request: Any) -> tuple[int, dict[str, str], str]:
        assert pending, f"unexpected extra request {request.url}"
        status, body = pending.pop(0)
        return status, {"Content-Type": "application/json"}, json.dumps(body)

    return answer


def assert_usage_is_optional(
    name: str,
    costs_url: str,
    usage_url: str,
    costs_page: dict[str, Any],
    usage_page: dict[str, Any],
    denied: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
    *,
    key: str,
    **fields: Any,
) -> None:
    """With ``usage_tokens: true``, the token usage request (``usage_url``) is an
    optional extra: when it fails the poll still succeeds with its cost lines and a
    warning, keeping the token samples of the last good usage request of the same
    month (none in a new month); a failing cost request (``costs_url``) still fails
    the poll.  ``denied`` is the API's 403 body; ``costs_page`` must give cost lines
    and ``usage_page`` token counts in :data:`MONTH`."""
    responses.add_callback(
        responses.GET,
        costs_url,
        callback=queued(*[(200, costs_page)] * 3, (500, {}), (200, costs_page)),
    )
    responses.add_callback(
        responses.GET,
        usage_url,
        callback=queued((403, denied), (200, usage_page), (503, {}), (503, {})),
    )
    provider = make_provider(name, admin_key=key, usage_tokens=True, retries=0, **fields)
    caplog.set_level(logging.WARNING)

    # 1. Usage refused (an Admin key without the usage scope): cost lines, no tokens.
    first = provider.poll([MONTH])
    assert first.lines, "the cost lines of the poll were lost"
    assert first.samples == ()
    assert provider.requests_seen == ["ok", "client_error"]
    assert "token usage not updated" in caplog.text and "HTTP 403" in caplog.text
    assert "Admin key may lack access to the usage API" in caplog.text
    assert "no token figures until a usage request succeeds" in caplog.text
    assert key not in caplog.text

    # 2. Usage works: tokens appear.
    second = provider.poll([MONTH])
    assert second.lines == first.lines
    assert any(s.name == "budget_source_usage_tokens" for s in second.samples)

    # 3. Usage fails again: the last good tokens of this month are kept.
    caplog.clear()
    third = provider.poll([MONTH])
    assert third.lines == first.lines and third.samples == second.samples
    assert "HTTP 503" in caplog.text and "last successful usage request" in caplog.text

    # 4. The cost request fails: the poll fails, whatever usage would say.
    with pytest.raises(SourceError, match="HTTP 500"):
        provider.poll([MONTH])

    # 5. A new month with usage failing: last month's tokens are not carried over.
    caplog.clear()
    later = MONTH.end + timedelta(days=1)
    next_month = window_at(Period.MONTHLY, later)
    provider.context = replace(provider.context, now=lambda: later)
    fifth = provider.poll([next_month])
    assert fifth.samples == ()
    assert "no token figures until a usage request succeeds" in caplog.text


def run_once(config: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    """``python -m budget_exporter --once``: poll every source, print the metrics."""
    return run(f"--config.file={config}", "--once", *flags)


def run_once_checked(
    config: Path, *flags: str, secret: str, returncode: int = 0
) -> tuple[subprocess.CompletedProcess[str], Series]:
    """:func:`run_once`, checking its exit code and that ``secret`` is in neither its
    output nor its log; the run and its parsed metrics."""
    proc = run_once(config, *flags)
    assert proc.returncode == returncode, proc.stderr
    assert secret not in proc.stdout and secret not in proc.stderr
    return proc, parse_metrics(proc.stdout)
