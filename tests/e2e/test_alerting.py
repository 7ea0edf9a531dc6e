"""End to end: exporter -> Prometheus (shipped rules) -> Alertmanager (example config).

Real processes on 127.0.0.1: ``python -m budget_exporter`` on ``static`` sources
at several usage ratios, Prometheus evaluating a copy of rules/ whose ``for:``
are cut to a second (and the spend-rate windows from days to seconds), and
Alertmanager running a copy of the example config with Slack pointed at a local
webhook receiver and email at a local SMTP server. Only addresses, secret files
and timings are changed in the copies; routing, inhibition and templates are the
shipped ones. A second test drives one budget's spend from a local HTTP source
to a sudden jump, so that BudgetSpendAnomaly goes all the way to Slack.
"""

from __future__ import annotations

import re
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import (
    ALERTMANAGER,
    PROMETHEUS,
    Service,
    ServiceSet,
    SlackReceiver,
    SmtpRecorder,
    WebhookReceiver,
    am_alerts,
    free_port,
    prom_alerts,
    prom_query,
    wait_until,
)
from tests.support.alerting import start_alerting
from tests.support.fake_upstream import FakeUpstream, Reply
from tests.support.tools import APT_ALERTMANAGER, APT_PROMETHEUS, needs_tool

pytestmark = [
    pytest.mark.e2e,
    needs_tool(PROMETHEUS, install=APT_PROMETHEUS),
    needs_tool(ALERTMANAGER, install=APT_ALERTMANAGER),
]

# Every budget has a 100 USD limit and one static source; "custom" warns at 90 %.
EXPORTER_CONFIG = """\
global:
  poll_interval: 1h
  timeout: 1s
  retries: 0
sources:
  - {{name: s-ok, provider: static, amount: 50, currency: USD}}
  - {{name: s-warn, provider: static, amount: 85, currency: USD}}
  - {{name: s-stop, provider: static, amount: 97, currency: USD}}
  - {{name: s-over, provider: static, amount: 120, currency: USD}}
  - {{name: s-custom, provider: static, amount: 85, currency: USD}}
  # Nothing listens on this port: the source is down from its first poll.
  - name: broken
    provider: http_json
    url: http://127.0.0.1:{closed_port}/v1/cost
    amount: total
    currency: USD
budgets:
  - {{name: ok, limit: 100, currency: USD, sources: [s-ok], labels: {{team: finops}}}}
  - {{name: warn, limit: 100, currency: USD, sources: [s-warn], labels: {{team: ml}}}}
  - {{name: stop, limit: 100, currency: USD, sources: [s-stop], labels: {{team: finops}}}}
  - {{name: over, limit: 100, currency: USD, sources: [s-over], labels: {{team: finops}}}}
  - name: custom
    limit: 100
    currency: USD
    sources: [s-custom]
    warning_ratio: 0.9
    labels: {{team: growth}}
"""

# (alertname, budget or source)
FIRING = {
    ("BudgetWarning", "warn"),
    ("BudgetWarning", "stop"),
    ("BudgetWarning", "over"),
    ("BudgetStop", "stop"),
    ("BudgetStop", "over"),
    ("BudgetExceeded", "over"),
    ("BudgetSourceDown", "broken"),
}
INHIBITED = {("BudgetWarning", "stop"), ("BudgetWarning", "over"), ("BudgetStop", "over")}
TO_SLACK = FIRING - INHIBITED
TO_EMAIL = {("BudgetStop", "stop"), ("BudgetExceeded", "over")}
TO_WEBHOOK = TO_EMAIL  # critical alerts only

SLACK_TITLE = re.compile(
    r"^\[FIRING:(?P<count>\d+)\] (?P<severity>\w+) (?P<alertname>\w+)(?:: budget (?P<budget>\S+))?$"
)
SLACK_SOURCE = re.compile(r"\*Source:\* (\S+)")
EMAIL_SUBJECT = re.compile(
    r"^\[FIRING:\d+\] (?P<alertname>\w+)(?:: budget (?P<budget>\S+) at .*)?$"
)


def key(labels: dict[str, str]) -> tuple[str, str]:
    return labels["alertname"], labels.get("budget") or labels.get("source", "")


def slack_deliveries(slack: SlackReceiver) -> dict[tuple[str, str], dict[str, Any]]:
    """Firing notifications received, by (alertname, budget or source)."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for post in slack.posts:
        for attachment in post.payload["attachments"]:
            match = SLACK_TITLE.match(attachment["title"])
            assert match, f"unexpected Slack title {attachment['title']!r}"
            subject = match["budget"]
            if subject is None:
                source = SLACK_SOURCE.search(attachment["text"])
                subject = source[1] if source else ""
            found[(match["alertname"], subject)] = {"post": post, **attachment}
    return found


def webhook_deliveries(webhook: WebhookReceiver) -> dict[tuple[str, str], dict[str, Any]]:
    """Firing alerts posted to the webhook, by (alertname, budget), with the post they came in."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for post in webhook.posts:
        for alert in post.payload["alerts"]:
            if alert["status"] == "firing":
                found[key(alert["labels"])] = {"post": post, **alert}
    return found


def email_deliveries(smtp: SmtpRecorder) -> dict[tuple[str, str], Any]:
    found = {}
    for mail in smtp.mails:
        match = EMAIL_SUBJECT.match(mail.subject)
        assert match, f"unexpected email subject {mail.subject!r}"
        found[(match["alertname"], match["budget"] or "")] = mail
    return found


@pytest.fixture
def stack(
    tmp_path: Path,
    services: ServiceSet,
    slack_receiver: SlackReceiver,
    smtp_recorder: SmtpRecorder,
    webhook_receiver: WebhookReceiver,
) -> dict[str, Any]:
    config = textwrap.dedent(EXPORTER_CONFIG).format(closed_port=free_port())
    return start_stack(tmp_path, services, slack_receiver, smtp_recorder, config, webhook_receiver)


def start_stack(
    tmp_path: Path,
    services: ServiceSet,
    slack_receiver: SlackReceiver,
    smtp_recorder: SmtpRecorder,
    exporter_config_text: str,
    webhook: WebhookReceiver,
) -> dict[str, Any]:
    """The exporter on ``exporter_config_text``, Prometheus and Alertmanager."""
    exporter_config = tmp_path / "exporter.yml"
    exporter_config.write_text(exporter_config_text)
    exporter = services.exporter(exporter_config)
    alerting = start_alerting(
        tmp_path, services, slack_receiver, smtp_recorder, webhook, [exporter]
    )
    return {
        "exporter": exporter,
        "prometheus": alerting.prometheus,
        "alertmanager": alerting.alertmanager,
        "slack": slack_receiver,
        "smtp": smtp_recorder,
        "password": alerting.password,
        "webhook": webhook,
        "webhook_token": alerting.webhook_token,
    }


def test_alerts_fire_route_and_inhibit(stack: dict[str, Any]) -> None:
    prometheus: Service = stack["prometheus"]
    alertmanager: Service = stack["alertmanager"]
    slack: SlackReceiver = stack["slack"]
    smtp: SmtpRecorder = stack["smtp"]

    # 1. Prometheus: exactly these alerts fire -- nothing for "ok" (50 %), nothing
    #    for "custom" (85 % under its own 90 % threshold), no stale data, exporter up.
    def firing() -> set[tuple[str, str]]:
        return {key(a["labels"]) for a in prom_alerts(prometheus)}

    wait_until(lambda: firing() == FIRING, 30, "Prometheus to fire exactly the expected alerts")
    states = {
        r["metric"]["budget"]: float(r["value"][1])
        for r in prom_query(prometheus, "budget:budget_state:thresholds")
    }
    assert states == {"ok": 0, "warn": 1, "stop": 2, "over": 3, "custom": 0}

    # 2. Alertmanager: the milder alerts of a budget at stop or over its limit are
    #    held back by the inhibit rules, and by nothing else.
    def suppressed() -> set[tuple[str, str]]:
        return {
            key(a["labels"])
            for a in am_alerts(alertmanager)
            if a["status"]["state"] == "suppressed" and a["status"]["inhibitedBy"]
        }

    wait_until(lambda: suppressed() == INHIBITED, 20, "Alertmanager to inhibit the milder alerts")

    # 3. Deliveries: Slack gets warnings and criticals, email only criticals.
    wait_until(lambda: slack_deliveries(slack).keys() >= TO_SLACK, 30, "the Slack notifications")
    wait_until(lambda: email_deliveries(smtp).keys() >= TO_EMAIL, 30, "the email notifications")
    webhook: WebhookReceiver = stack["webhook"]
    wait_until(
        lambda: webhook_deliveries(webhook).keys() >= TO_WEBHOOK, 30, "the webhook notifications"
    )
    # Every group waited the same group_wait, so anything inhibition let through
    # would have arrived with the rest; give stragglers a moment.
    time.sleep(1.0)
    assert slack_deliveries(slack).keys() == TO_SLACK
    assert email_deliveries(smtp).keys() == TO_EMAIL
    assert webhook_deliveries(webhook).keys() == TO_WEBHOOK

    # 4. The Slack messages: webhook read from api_url_file, figures from the templates.
    sent = slack_deliveries(slack)
    assert {d["post"].path for d in sent.values()} == {"/services/T000/B000/XXXX"}
    assert {d["post"].payload["channel"] for d in sent.values()} == {"#budget-alerts"}
    warn = sent[("BudgetWarning", "warn")]
    assert warn["title"] == "[FIRING:1] warning BudgetWarning: budget warn"
    assert warn["color"] == "warning"
    assert "*Budget:* warn (monthly, USD) · team ml" in warn["text"]
    assert "*Spend:* 85.00 USD of 100.00 USD (85%)" in warn["text"]
    assert (
        "Budget warn (monthly) has spent 85.00 USD of its 100.00 USD limit (85%), "
        "at or above its warning threshold of 80%." in warn["text"]
    )
    assert "docs/runbook.md#budgetwarning|Runbook>" in warn["text"]
    stop = sent[("BudgetStop", "stop")]
    assert stop["color"] == "danger"
    assert "*Spend:* 97.00 USD of 100.00 USD (97%)" in stop["text"]
    assert "at or above its stop threshold of 95%." in stop["text"]
    over = sent[("BudgetExceeded", "over")]
    assert over["color"] == "danger"
    assert "*Spend:* 120.00 USD of 100.00 USD (120%)" in over["text"]
    down = sent[("BudgetSourceDown", "broken")]
    assert down["title"] == "[FIRING:1] warning BudgetSourceDown"
    assert "*Source:* broken (provider http_json)" in down["text"]
    assert "(last success: never)" in down["text"]
    assert "*Spend:*" not in down["text"]

    # 5. The emails: critical only, password read from auth_password_file.
    mails = email_deliveries(smtp)
    for mail in mails.values():
        assert mail.mail_from == "budget-alerts@example.com"
        assert mail.rcpt_tos == ("finops@example.com",)
    assert ("budget-alerts@example.com", stack["password"]) in smtp.logins
    mail = mails[("BudgetStop", "stop")]
    assert mail.subject == "[FIRING:1] BudgetStop: budget stop at 97%"
    text, html = mail.part("plain"), mail.part("html")
    for line in (
        "Budget:   stop (monthly, USD), team finops",
        "Spend:    97.00 USD",
        "Limit:    100.00 USD",
        "Usage:    97%",
    ):
        assert line in text
    for cell in ("<td>97.00 USD</td>", "<td>100.00 USD</td>", "<td>97%</td>"):
        assert cell in html
    mail = mails[("BudgetExceeded", "over")]
    assert mail.subject == "[FIRING:1] BudgetExceeded: budget over at 120%"
    assert "Spend:    120.00 USD" in mail.part("plain")

    # 6. The webhook: critical only, Alertmanager's JSON, the bearer token read from its file.
    hooks = webhook_deliveries(webhook)
    for delivery in hooks.values():
        post = delivery["post"]
        assert post.path == "/hooks/budget-exporter"
        assert post.headers["Authorization"] == f"Bearer {stack['webhook_token']}"
        assert post.payload["version"] == "4"
        assert post.payload["receiver"] == "webhook"
    stop_alert = hooks[("BudgetStop", "stop")]
    assert stop_alert["labels"]["severity"] == "critical"
    assert stop_alert["labels"]["team"] == "finops"
    assert stop_alert["annotations"]["runbook_url"].endswith("docs/runbook.md#budgetstop")
    assert "97.00 USD of its 100.00 USD limit" in stop_alert["annotations"]["description"]


# -- BudgetSpendAnomaly, end to end ---------------------------------------------------

SPIKY_CONFIG = """\
global:
  poll_interval: 1s
  timeout: 1s
  retries: 0
sources:
  - name: usage
    provider: http_json
    url: {url}/v1/cost
    amount: total
    currency: USD
budgets:
  # A "day" is 4 seconds here (WINDOWS_IN_TEST): a normal one costs about 4 USD.
  - name: spiky
    limit: 1000000000
    currency: USD
    sources: [usage]
    anomaly_min_daily_amount: 1
    anomaly_min_history: 8s
    labels: {{team: ml}}
"""
NORMAL_RATE, SPIKE_RATE = 1.0, 10.0  # USD a second


class GrowingSpend:
    """Month-to-date spend served by ``upstream``, growing at ``rate`` USD a second."""

    def __init__(self, upstream: FakeUpstream) -> None:
        self.upstream = upstream
        self.rate = NORMAL_RATE
        self.total = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            self.total += self.rate * (now - last)
            last = now
            self.upstream.default = Reply(json={"total": round(self.total, 3)})
            self._stop.wait(0.1)

    def __enter__(self) -> GrowingSpend:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


@pytest.fixture
def growing_spend(upstream: FakeUpstream) -> Iterator[GrowingSpend]:
    with GrowingSpend(upstream) as spend:
        yield spend


def test_spend_anomaly_reaches_slack(
    tmp_path: Path,
    services: ServiceSet,
    slack_receiver: SlackReceiver,
    smtp_recorder: SmtpRecorder,
    webhook_receiver: WebhookReceiver,
    upstream: FakeUpstream,
    growing_spend: GrowingSpend,
) -> None:
    stack = start_stack(
        tmp_path,
        services,
        slack_receiver,
        smtp_recorder,
        SPIKY_CONFIG.format(url=upstream.url),
        webhook_receiver,
    )
    prometheus: Service = stack["prometheus"]

    def anomalies() -> list[dict[str, Any]]:
        return [
            a
            for a in prom_alerts(prometheus, state=None)
            if a["labels"]["alertname"] == "BudgetSpendAnomaly"
        ]

    # 1. Steady spend until the budget has its history: no anomaly, pending or firing.
    history = "count_over_time(budget:budget_spend_amount:rate1d[16s:1s] offset 4s)"
    wait_until(
        lambda: any(float(r["value"][1]) >= 10 for r in prom_query(prometheus, history)),
        40,
        "ten seconds of daily-spend history",
    )
    assert anomalies() == []
    typical = prom_query(prometheus, "budget:budget_spend_amount:rate1d_median")
    assert [round(float(r["value"][1])) for r in typical] == [NORMAL_RATE]

    # 2. Ten times the spend: the anomaly fires and Alertmanager posts it to Slack.
    growing_spend.rate = SPIKE_RATE
    sent = wait_until(
        lambda: slack_deliveries(slack_receiver).get(("BudgetSpendAnomaly", "spiky")),
        30,
        "BudgetSpendAnomaly in Slack",
    )
    assert sent["title"] == "[FIRING:1] warning BudgetSpendAnomaly: budget spiky"
    assert sent["color"] == "warning"
    assert "*Budget:* spiky (monthly, USD) · team ml" in sent["text"]
    # Money in full, two decimals, never an SI prefix ("1G USD").
    assert "of 1000000000.00 USD (" in sent["text"]
    assert re.search(
        r"Budget spiky \(monthly\) spent \d+\.\d\d USD in the last 24 hours", sent["text"]
    )
    assert "It alerts at 3 times a typical day when the day is at least 1.00 USD." in sent["text"]
    assert "docs/runbook.md#budgetspendanomaly|Runbook>" in sent["text"]
    # Nothing else about this budget: its limit is far away.
    assert set(slack_deliveries(slack_receiver)) == {("BudgetSpendAnomaly", "spiky")}
