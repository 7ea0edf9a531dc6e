"""Helpers for the LLM/SaaS provider, check API and guard tests."""

from __future__ import annotations

import json
import logging
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import responses
from prometheus_client.parser import text_string_to_metric_families

from budget_exporter.errors import SourceError
from budget_exporter.model import Period, PollResult
from budget_exporter.periods import window_at
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
