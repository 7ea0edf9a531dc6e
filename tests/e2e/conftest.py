"""Fixtures for end-to-end tests with real processes (see tests/support)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ServiceSet, SlackReceiver, SmtpRecorder, WebhookReceiver


@pytest.fixture
def services(tmp_path: Path) -> Iterator[ServiceSet]:
    """Start the exporter, Prometheus, Alertmanager; all are stopped at teardown.

    Their logs are printed at teardown; pytest shows them only if the test failed.
    """
    with ServiceSet(tmp_path) as started:
        yield started
        print(started.log_tails())


@pytest.fixture
def slack_receiver() -> Iterator[SlackReceiver]:
    receiver = SlackReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture
def smtp_recorder() -> Iterator[SmtpRecorder]:
    recorder = SmtpRecorder().start()
    yield recorder
    recorder.stop()
