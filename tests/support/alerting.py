"""Prometheus and Alertmanager for the end-to-end alerting tests: copies of the shipped
rules and of the example Alertmanager config, changed only in timings, addresses and
secret files, and the two started against the local receivers."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support.receivers import SlackReceiver, SmtpRecorder, WebhookReceiver
from tests.support.services import Service, ServiceSet

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "rules" / "budget-exporter.rules.yml"
AM_CONFIG = ROOT / "rules" / "alertmanager" / "alertmanager.yml"

ALERTS = {
    "BudgetWarning",
    "BudgetStop",
    "BudgetExceeded",
    "BudgetForecastOverrun",
    "BudgetSourceDown",
    "BudgetDataStale",
    "BudgetExporterDown",
    "BudgetSpendAnomaly",
    "BudgetBurnRateHigh",
    "BudgetMeterBlind",
    "BudgetMeterUnpricedTokens",
}
# The linear forecast of a static amount depends on the day of the month, so
# BudgetForecastOverrun keeps its shipped `for: 6h` and cannot fire here (its
# cases are in rules/tests/budget-forecast.test.yml).  BudgetExporterDown gets a
# few seconds so that Prometheus's first rule evaluation, which may come before
# its first scrape, cannot fire it.
FOR_IN_TEST = {"BudgetForecastOverrun": None, "BudgetExporterDown": "10s"}
GROUP_WAIT = 2.0
# The spend-rate rules judge a day against the 14 days before it; here a "day" is
# 4 seconds and the baseline the 16 seconds before it (scrapes and evaluations
# come every second). Text substitutions in the copy; each must match.
WINDOWS_IN_TEST = {
    "[14d:1h] offset 1d": "[16s:1s] offset 4s",
    "[1d]": "[4s]",
    "86400": "4",
    "* 3600\n": "* 1\n",  # the history is counted in samples of the subquery step
}


def rules_copy(path: Path) -> Path:
    """The shipped rules with `for:` cut to a second (see FOR_IN_TEST) and the
    spend-rate windows shrunk (WINDOWS_IN_TEST)."""
    text = RULES.read_text()
    for old, new in WINDOWS_IN_TEST.items():
        assert old in text, f"{old!r} is no longer in the rules"
        text = text.replace(old, new)
    doc = yaml.safe_load(text)
    names = set()
    for group in doc["groups"]:
        for rule in group["rules"]:
            if "alert" not in rule:
                continue
            names.add(rule["alert"])
            duration = FOR_IN_TEST.get(rule["alert"], "1s")
            if duration is not None:
                rule["for"] = duration
    assert names == ALERTS, "the rules file and this test disagree on the alert names"
    path.write_text(yaml.safe_dump(doc, sort_keys=False, width=1000))
    return path


def alertmanager_copy(
    path: Path,
    smtp: SmtpRecorder,
    slack_url_file: Path,
    password_file: Path,
    webhook: WebhookReceiver,
    webhook_token_file: Path,
) -> Path:
    """The example config pointed at the local receivers, with timings in seconds."""
    doc: dict[str, Any] = yaml.safe_load(AM_CONFIG.read_text())
    doc["global"]["smtp_smarthost"] = f"{smtp.host}:{smtp.port}"
    doc["global"]["smtp_require_tls"] = False  # the local server has no TLS
    doc["templates"] = [str(AM_CONFIG.parent / glob) for glob in doc["templates"]]
    doc["route"].update(group_wait=f"{GROUP_WAIT:g}s", group_interval="5s", repeat_interval="1h")
    receivers = {r["name"]: r for r in doc["receivers"]}
    for slack in receivers["slack"]["slack_configs"]:
        assert "api_url_file" in slack and "api_url" not in slack
        slack["api_url_file"] = str(slack_url_file)
    for mail in receivers["email"]["email_configs"]:
        assert "auth_password_file" in mail and "auth_password" not in mail
        mail["auth_password_file"] = str(password_file)
    for hook in receivers["webhook"]["webhook_configs"]:
        auth = hook["http_config"]["authorization"]
        assert "credentials_file" in auth and "credentials" not in auth
        auth["credentials_file"] = str(webhook_token_file)
        hook["url"] = webhook.url
    path.write_text(yaml.safe_dump(doc, sort_keys=False, width=1000))
    return path


@dataclass
class Alerting:
    prometheus: Service
    alertmanager: Service
    password: str
    """The SMTP password Alertmanager was given (in a file)."""
    webhook_token: str
    """The bearer token Alertmanager sends to the webhook (from a file)."""


def start_alerting(
    tmp_path: Path,
    services: ServiceSet,
    slack: SlackReceiver,
    smtp: SmtpRecorder,
    webhook: WebhookReceiver,
    exporters: list[Service],
) -> Alerting:
    """Alertmanager on :func:`alertmanager_copy` (its secrets in files under ``tmp_path``),
    and Prometheus scraping ``exporters`` as job ``budget-exporter`` with :func:`rules_copy`."""
    slack_url_file = tmp_path / "slack-webhook-url"
    slack_url_file.write_text(slack.url + "\n")
    password = secrets.token_hex(8)
    password_file = tmp_path / "smtp-password"
    # No trailing newline: Alertmanager 0.25 sends the file's bytes as they are
    # (a newline would become part of the password).
    password_file.write_text(password)
    webhook_token = secrets.token_hex(8)
    webhook_token_file = tmp_path / "webhook-token"
    webhook_token_file.write_text(webhook_token + "\n")
    alertmanager = services.alertmanager(
        alertmanager_copy(
            tmp_path / "alertmanager.yml",
            smtp,
            slack_url_file,
            password_file,
            webhook,
            webhook_token_file,
        )
    )
    prometheus = services.prometheus(
        {"budget-exporter": [f"127.0.0.1:{exporter.port}" for exporter in exporters]},
        rule_files=[rules_copy(tmp_path / "rules.yml")],
        alertmanagers=[f"127.0.0.1:{alertmanager.port}"],
    )
    return Alerting(prometheus, alertmanager, password, webhook_token)
