"""End to end: two replicas of the exporter scraped by one Prometheus with the shipped rules
(docs/kubernetes.md#replicas). Each budget's BudgetStop reaches the Alertmanager receiver
once, not once per replica, and BudgetExporterDown still fires when one replica dies."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.support import (
    ALERTMANAGER,
    PROMETHEUS,
    ServiceSet,
    SlackReceiver,
    SmtpRecorder,
    WebhookReceiver,
    prom_alerts,
    wait_until,
)
from tests.support.alerting import start_alerting
from tests.support.tools import APT_ALERTMANAGER, APT_PROMETHEUS, needs_tool

pytestmark = [
    pytest.mark.e2e,
    needs_tool(PROMETHEUS, install=APT_PROMETHEUS),
    needs_tool(ALERTMANAGER, install=APT_ALERTMANAGER),
]

CONFIG = """\
global: {poll_interval: 1h}
sources:
  - {name: s-ok, provider: static, amount: 50, currency: USD}
  - {name: s-stop, provider: static, amount: 97, currency: USD}
  - {name: s-stop2, provider: static, amount: 96, currency: USD}
budgets:
  - {name: ok, limit: 100, currency: USD, sources: [s-ok]}
  - {name: stop, limit: 100, currency: USD, sources: [s-stop]}
  - {name: stop2, limit: 100, currency: USD, sources: [s-stop2]}
"""


def stop_notifications(webhook: WebhookReceiver) -> dict[str, list[dict[str, str]]]:
    """Per budget, the label sets of every firing BudgetStop in every notification."""
    found: dict[str, list[dict[str, str]]] = {}
    for post in webhook.posts:
        for alert in post.payload["alerts"]:
            labels = alert["labels"]
            if alert["status"] == "firing" and labels["alertname"] == "BudgetStop":
                found.setdefault(labels["budget"], []).append(labels)
    return found


def test_two_replicas_notify_once_per_budget_and_a_dead_one_still_alerts(
    tmp_path: Path,
    services: ServiceSet,
    slack_receiver: SlackReceiver,
    smtp_recorder: SmtpRecorder,
    webhook_receiver: WebhookReceiver,
) -> None:
    config = tmp_path / "exporter.yml"
    config.write_text(CONFIG)
    replicas = [
        services.exporter(config, f"--storage.path={tmp_path / f'data-{i}'}") for i in range(2)
    ]
    prometheus = start_alerting(
        tmp_path, services, slack_receiver, smtp_recorder, webhook_receiver, replicas
    ).prometheus

    # Both replicas scraped, each exporting every budget: the alert still fires once.
    wait_until(
        lambda: stop_notifications(webhook_receiver).keys() == {"stop", "stop2"},
        40,
        "BudgetStop for both budgets at the receiver",
    )
    firing = [
        a["labels"] for a in prom_alerts(prometheus) if a["labels"]["alertname"] == "BudgetStop"
    ]
    assert sorted(a["budget"] for a in firing) == ["stop", "stop2"]
    assert all("instance" not in a for a in firing)
    time.sleep(3.0)  # a second notification per replica would have come with the first
    for budget, notified in stop_notifications(webhook_receiver).items():
        assert len(notified) == 1, (budget, notified)

    # One replica dies: BudgetExporterDown names it; the budgets still alert once.
    replicas[1].stop()
    services.services.remove(replicas[1])

    def down() -> list[dict[str, str]]:
        return [
            a["labels"]
            for a in prom_alerts(prometheus)
            if a["labels"]["alertname"] == "BudgetExporterDown"
        ]

    wait_until(lambda: bool(down()), 30, "BudgetExporterDown for the dead replica")
    assert [a["instance"] for a in down()] == [f"127.0.0.1:{replicas[1].port}"]
    firing = [
        a["labels"] for a in prom_alerts(prometheus) if a["labels"]["alertname"] == "BudgetStop"
    ]
    assert sorted(a["budget"] for a in firing) == ["stop", "stop2"]
    assert all(len(n) == 1 for n in stop_notifications(webhook_receiver).values())
