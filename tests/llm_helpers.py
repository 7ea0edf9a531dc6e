"""Helpers for the LLM/SaaS provider, check API and guard tests."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests
from prometheus_client.parser import text_string_to_metric_families

from budget_exporter.model import Period
from budget_exporter.periods import window_at
from budget_exporter.providers import get_provider
from budget_exporter.providers.base import ProviderContext
from tests.support.net import free_port

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


def run_once(config: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    """``python -m budget_exporter --once``: poll every source, print the metrics."""
    return subprocess.run(
        [sys.executable, "-m", "budget_exporter", f"--config.file={config}", "--once", *flags],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ},
    )


class Exporter:
    """``python -m budget_exporter`` serving on a loopback port."""

    def __init__(self, config: Path, *flags: str) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "budget_exporter",
                f"--config.file={config}",
                f"--web.listen-address={self.url.removeprefix('http://')}",
                *flags,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def wait_ready(self, timeout: float = 20, auth: tuple[str, str] | None = None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"exporter exited: {self.proc.communicate()[1]}")
            try:
                response = requests.get(f"{self.url}/-/ready", timeout=1, auth=auth)
                if response.status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        raise AssertionError("exporter never became ready")

    def stop(self) -> str:
        """Stop it; its stderr (the log)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            _, err = self.proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return err


def exporters() -> Iterator[Any]:
    """Body of a fixture that starts exporters and always stops them."""
    started: list[Exporter] = []

    def start(config: Path, *flags: str) -> Exporter:
        exporter = Exporter(config, *flags)
        started.append(exporter)
        return exporter

    yield start
    for exporter in started:
        exporter.stop()
