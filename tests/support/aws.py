"""Shared by the AWS provider tests: an offline AWS environment, a provider harness
and exporter helpers.

A test module turns the environment on for each of its tests by importing the
autouse fixture::

    from tests.support.aws import offline_aws  # noqa: F401 (autouse fixture)
"""

from __future__ import annotations

import logging
import os
import textwrap
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest
from botocore.stub import Stubber
from prometheus_client.parser import text_string_to_metric_families

from budget_exporter.core.errors import SourceError
from budget_exporter.providers.base import Provider, ProviderContext
from budget_exporter.runtime.engine import Engine
from tests.support.clock import Clock
from tests.support.net import loopback_guard

NO_RETRIES = "global:\n  retries: 0\n  retry_backoff: 10ms\n"
"""moto and botocore's Stubber answer a call once: a retry would find nothing queued."""


class Harness:
    """An AWS provider with a settable clock (``now``) and a counter of request outcomes
    (``requests``).  A test module subclasses it with its ``provider_class`` and ``source``."""

    provider_class: ClassVar[type[Provider]]
    source: ClassVar[str]

    def __init__(self, now: datetime, retries: int, **settings: Any) -> None:
        self.now = now
        self.requests: Counter[str] = Counter()
        self.context = ProviderContext(
            source=self.source,
            timeout=timedelta(seconds=5),
            retries=retries,
            retry_backoff=timedelta(milliseconds=10),
            max_retry_after=timedelta(seconds=1),
            record_request=lambda status: self.requests.update([status]),
            now=lambda: self.now,
            logger=logging.getLogger(f"budget_exporter.{self.source}"),
        )
        cls = self.provider_class
        config = cls.config_model.model_validate(
            {"name": self.source, "provider": cls.name, **settings}
        )
        self.provider: Any = cls(config, self.context)


@pytest.fixture(autouse=True)
def offline_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Fake credentials only (no shared config, no profile, no instance metadata), and
    no connection or name lookup but to loopback (:func:`tests.support.net.loopback_guard`)."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    loopback_guard(monkeypatch)


def engine_without_retries(
    make_engine: Callable[..., Engine], sources_and_budgets: str, now: datetime
) -> Engine:
    """``make_engine`` (tests/conftest.py) for ``sources_and_budgets`` (YAML, any
    indentation) under :data:`NO_RETRIES`, its clock set to ``now``."""
    text = NO_RETRIES + textwrap.dedent(sources_and_budgets).lstrip("\n")
    return make_engine(text, clock=Clock(now.timestamp()))


def stubbed_error(
    client: Any,
    operation: str,
    code: str,
    poll: Callable[[], object],
    message: str = "",
    http_status_code: int = 400,
) -> str:
    """The :class:`SourceError` message ``poll()`` must raise while ``client`` answers
    ``operation`` with the AWS error ``code`` (botocore's Stubber)."""
    with Stubber(client) as stubber:
        stubber.add_client_error(
            operation,
            service_error_code=code,
            service_message=message,
            http_status_code=http_status_code,
        )
        with pytest.raises(SourceError) as info:
            poll()
    return str(info.value)


def access_denied(client: Any, operation: str, action: str, poll: Callable[[], object]) -> str:
    """:func:`stubbed_error` for the AccessDeniedException AWS sends an identity
    without the IAM ``action``, worded as AWS words it."""
    return stubbed_error(
        client,
        operation,
        "AccessDeniedException",
        poll,
        f"User: arn:aws:iam::123456789012:user/monitor is not authorized to perform: {action}",
    )


def metric_value(text: str, name: str, **labels: str) -> float | None:
    """The first sample of ``name`` whose labels include ``labels``; None if there is none."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None
