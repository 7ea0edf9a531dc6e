"""The shipped rules and Alertmanager example, checked with promtool and amtool.

- ``promtool check rules`` and ``promtool test rules rules/tests/*.yml`` pass;
- the promtool cases notice a broken rule (each mutation below must fail them);
- every alert follows the conventions (severity, summary, runbook section) and has
  cases that fire and cases that stay silent;
- ``amtool check-config`` passes and routes critical alerts to a webhook, Slack and
  email, warnings to Slack only.

Tests that need promtool or amtool skip when the binary is absent (CI installs both).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.paths import ROOT
from tests.support.tools import APT_ALERTMANAGER, APT_PROMETHEUS, needs_tool

RULES = ROOT / "rules" / "budget-exporter.rules.yml"
ALL_RULE_FILES = sorted((ROOT / "rules").glob("*.rules.yml"))
ALL_RULE_TESTS = sorted((ROOT / "rules" / "tests").glob("*.yml"))
# The promtool files that test RULES (others in rules/tests/ test other rule files).
RULE_TESTS = [
    path
    for path in ALL_RULE_TESTS
    if any(Path(f).name == RULES.name for f in yaml.safe_load(path.read_text())["rule_files"])
]
AM_DIR = ROOT / "rules" / "alertmanager"
AM_CONFIG = AM_DIR / "alertmanager.yml"
RUNBOOK = ROOT / "docs" / "runbook.md"
RUNBOOK_URL = "https://github.com/budget-exporter/budget-exporter/blob/main/docs/runbook.md#"

# Alert name -> its severities (BudgetBurnRateHigh has a critical and a warning rule).
SEVERITIES = {
    "BudgetWarning": {"warning"},
    "BudgetStop": {"critical"},
    "BudgetExceeded": {"critical"},
    "BudgetForecastOverrun": {"warning"},
    "BudgetSourceDown": {"warning"},
    "BudgetDataStale": {"warning"},
    "BudgetExporterDown": {"critical"},
    "BudgetSpendAnomaly": {"warning"},
    "BudgetBurnRateHigh": {"critical", "warning"},
    "BudgetMeterBlind": {"warning"},
    "BudgetMeterUnpricedTokens": {"warning"},
}
BUDGET_ALERTS = {
    "BudgetWarning",
    "BudgetStop",
    "BudgetExceeded",
    "BudgetForecastOverrun",
    "BudgetSpendAnomaly",
    "BudgetBurnRateHigh",
}

PROMTOOL = shutil.which("promtool")
AMTOOL = shutil.which("amtool")
needs_promtool = needs_tool(["promtool"], install=APT_PROMETHEUS)
needs_amtool = needs_tool(["amtool"], install=APT_ALERTMANAGER)


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, cwd=ROOT)


def output(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def alert_rules(name: str | None = None) -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule and name in (None, rule["alert"])]


# -- promtool ------------------------------------------------------------------------


@needs_promtool
def test_promtool_check_rules() -> None:
    assert RULES in ALL_RULE_FILES
    result = run(str(PROMTOOL), "check", "rules", *map(str, ALL_RULE_FILES))
    assert result.returncode == 0, output(result)
    assert result.stdout.count("SUCCESS") == len(ALL_RULE_FILES), output(result)
    mine = run(str(PROMTOOL), "check", "rules", str(RULES))
    assert f"SUCCESS: {len(rules())} rules found" in mine.stdout, output(mine)


@needs_promtool
def test_promtool_rule_tests_pass() -> None:
    """``promtool test rules rules/tests/*.yml``: every file in the folder."""
    assert len(RULE_TESTS) >= 3
    result = run(str(PROMTOOL), "test", "rules", *map(str, ALL_RULE_TESTS))
    assert result.returncode == 0, output(result)
    assert result.stdout.count("SUCCESS") == len(ALL_RULE_TESTS), output(result)


def copy_with_tests(
    tmp_path: Path, rules_text: str, only: Collection[str] | None = None
) -> list[str]:
    """RULES (as ``rules_text``) and its promtool files (or those named in ``only``) in
    the same layout; the test paths."""
    (tmp_path / "tests").mkdir()
    (tmp_path / RULES.name).write_text(rules_text)
    chosen = [path for path in RULE_TESTS if only is None or path.name in only]
    assert only is None or len(chosen) == len(only), f"unknown test files in {only}"
    for test_file in chosen:
        shutil.copy(test_file, tmp_path / "tests" / test_file.name)
    return sorted(str(tmp_path / "tests" / path.name) for path in chosen)


@needs_promtool
def test_rule_tests_pass_from_a_copy(tmp_path: Path) -> None:
    """The copy the mutation tests use passes unchanged, so their failures are the mutations'."""
    result = run(str(PROMTOOL), "test", "rules", *copy_with_tests(tmp_path, RULES.read_text()))
    assert result.returncode == 0, output(result)


# Each edit breaks one behaviour the promtool cases pin down.
MUTATIONS = [
    pytest.param(
        "(budget_usage_ratio >= budget_warning_threshold_ratio)",
        "(budget_usage_ratio >= 0.8)",
        id="warning-threshold-hard-coded",
    ),
    pytest.param(
        "(budget_usage_ratio >= budget_stop_threshold_ratio)\n",
        "(budget_usage_ratio > budget_stop_threshold_ratio)\n",
        id="stop-strictly-above",
    ),
    pytest.param(
        "(budget_usage_ratio >= 1)\n",
        "(budget_usage_ratio > 1)\n",
        id="exceeded-strictly-above",
    ),
    pytest.param(
        "expr: max without (instance, pod) (budget_usage_ratio >= budget_stop_threshold_ratio)",
        "expr: budget_usage_ratio >= budget_stop_threshold_ratio",
        id="stop-once-per-replica",
    ),
    pytest.param(
        "expr: max without (instance, pod) (budget_source_up == 0)",
        "expr: budget_source_up == 0",
        id="source-down-once-per-replica",
    ),
    pytest.param("for: 30m\n", "for: 0s\n", id="warning-without-for"),
    pytest.param("for: 6h\n", "for: 1h\n", id="forecast-short-for"),
    pytest.param(
        "> 3 * budget_source_poll_interval_seconds",
        "> 3 * 3600",
        id="stale-ignores-poll-interval",
    ),
    pytest.param("or on()\n", "or\n", id="exporter-down-alerts-twice"),
    pytest.param("budget_source_up == 0", "budget_source_up < 0", id="source-down-never"),
    pytest.param("runbook.md#budgetstop", "runbook.md#stop", id="wrong-runbook-anchor"),
    pytest.param("| humanizePercentage }}), at", "}}), at", id="usage-not-humanized"),
    pytest.param(
        '| value | printf "%.2f" }}{{ end }} {{ $labels.currency }}',
        "| value | humanize }}{{ end }} {{ $labels.currency }}",
        id="money-humanized",
    ),
    pytest.param(
        "or (budget_usage_ratio >= budget_stop_threshold_ratio) * 0 + 2",
        "or (budget_usage_ratio >= budget_stop_threshold_ratio) * 0 + 1",
        id="state-stop-as-warning",
    ),
    pytest.param(
        "clamp_min(budget_period_end_timestamp_seconds - time(), 0)",
        "budget_period_end_timestamp_seconds - time()",
        id="remaining-seconds-negative",
    ),
    pytest.param(
        "(budget_source_up == 0) * 0 + 3", "(budget_source_up == 0) * 0 + 2", id="down-as-stale"
    ),
    pytest.param(
        ") - 1,\n              0, 2", "),\n              0, 2", id="late-after-one-interval"
    ),
    pytest.param("0, 2\n", "0, 1\n", id="stale-shown-as-late"),
]


# The spend-rate rules are checked against the one file that pins each behaviour
# down: a promtool run of all the files takes seconds.
SPEND_RATE_TESTS = {
    "spend-rate.test.yml",
    "budget-anomaly.test.yml",
    "budget-anomaly-patterns.test.yml",
    "budget-burn-rate.test.yml",
}
SLOW_CALENDAR_TESTS = {"periods.test.yml"}
"""Period ends over whole years of samples: seconds of promtool each, and no threshold rule in
them; they run in test_promtool_rule_tests_pass, not once per threshold mutation."""
THRESHOLD_TESTS = {path.name for path in RULE_TESTS} - SPEND_RATE_TESTS - SLOW_CALENDAR_TESTS
SPEND_RATE_MUTATIONS = [
    pytest.param(
        "unless resets(budget_spend_amount[1d]) > changes(budget_period_start_timestamp_seconds[1d])",
        "unless resets(budget_spend_amount[1d]) > 1e9",
        {"budget-anomaly-patterns.test.yml"},
        id="credit-read-as-counter-reset",
    ),
    pytest.param(
        "unless resets(budget_spend_amount[1h]) > changes(budget_period_start_timestamp_seconds[1h])",
        "unless resets(budget_spend_amount[1h]) > 0",
        {"spend-rate.test.yml"},
        id="period-boundary-read-as-credit",
    ),
    pytest.param(
        "- min_over_time(budget_spend_amount[1h])",
        "- max_over_time(budget_spend_amount[1h])",
        {"spend-rate.test.yml"},
        id="rate-after-a-drop-from-the-highest-point",
    ),
    pytest.param(
        ">= budget_anomaly_threshold_ratio * budget:budget_spend_amount:rate1d_median",
        ">= 3 * budget:budget_spend_amount:rate1d_median",
        {"budget-anomaly.test.yml"},
        id="anomaly-factor-hard-coded",
    ),
    pytest.param(
        ">= budget_anomaly_min_daily_amount",
        ">= 0",
        {"budget-anomaly.test.yml"},
        id="anomaly-without-floor",
    ),
    pytest.param(
        ">= budget_anomaly_min_history_seconds",
        ">= 0",
        {"budget-anomaly.test.yml"},
        id="anomaly-without-history",
    ),
    pytest.param(
        'label_replace(budget:budget_spend_amount:rate1h, "window", "short", "", "")',
        'label_replace(budget:budget_spend_amount:rate6h, "window", "short", "", "")',
        {"budget-burn-rate.test.yml"},
        id="burn-rate-without-short-window",
    ),
    pytest.param(
        'label_replace(budget:budget_spend_amount:rate1d, "window", "day", "", "")',
        'label_replace(budget:budget_spend_amount:rate6h, "window", "day", "", "")',
        {"budget-burn-rate.test.yml"},
        id="burn-rate-without-day-window",
    ),
    pytest.param(
        "present_over_time(budget_spend_amount[1h] offset 23h)",
        "present_over_time(budget_spend_amount[1h] offset 1h)",
        {"budget-burn-rate.test.yml"},
        id="burn-rate-day-window-on-young-series",
    ),
    pytest.param(
        "< budget_period_end_timestamp_seconds - time()",
        "< 1e12",
        {"budget-burn-rate.test.yml"},
        id="burn-rate-ignores-period-end",
    ),
    pytest.param(
        "<= budget_burn_rate_critical_horizon_seconds",
        "<= 259200",
        {"budget-burn-rate.test.yml"},
        id="burn-rate-critical-horizon-hard-coded",
    ),
]


@needs_promtool
@pytest.mark.parametrize(
    ("old", "new", "only"),
    [pytest.param(*m.values, THRESHOLD_TESTS, id=m.id) for m in MUTATIONS] + SPEND_RATE_MUTATIONS,
)
def test_rule_tests_catch_a_broken_rule(
    tmp_path: Path, old: str, new: str, only: Collection[str]
) -> None:
    text = RULES.read_text()
    assert old in text, f"mutation target {old!r} not found in the rules"
    tests = copy_with_tests(tmp_path, text.replace(old, new), only)
    check = run(str(PROMTOOL), "check", "rules", str(tmp_path / RULES.name))
    assert check.returncode == 0, f"the mutated rules should still be valid: {output(check)}"
    result = run(str(PROMTOOL), "test", "rules", *tests)
    assert result.returncode != 0, f"no promtool case noticed {old!r} -> {new!r}"
    assert "FAILED" in result.stdout + result.stderr


@needs_promtool
def test_promtool_rejects_invalid_promql(tmp_path: Path) -> None:
    broken = tmp_path / "broken.rules.yml"
    broken.write_text(
        RULES.read_text().replace("budget_usage_ratio >= 1)\n", "budget_usage_ratio >=)\n")
    )
    result = run(str(PROMTOOL), "check", "rules", str(broken))
    assert result.returncode != 0, output(result)


# -- conventions ---------------------------------------------------------------------


def test_alert_names_and_severities() -> None:
    found: dict[str, set[str]] = {}
    for rule in alert_rules():
        found.setdefault(rule["alert"], set()).add(rule["labels"]["severity"])
    assert found == SEVERITIES
    assert len(alert_rules()) == sum(map(len, SEVERITIES.values()))


@pytest.mark.parametrize("name", sorted(SEVERITIES))
def test_alert_annotations(name: str) -> None:
    for rule in alert_rules(name):
        assert re.fullmatch(r"\d+[smh]", rule["for"])
        notes = rule["annotations"]
        summary = notes["summary"]
        assert "{{" not in summary and summary.endswith(".") and summary[0].isupper()
        assert "{{" in notes["description"]
        assert notes["runbook_url"] == RUNBOOK_URL + name.lower()
        if name in BUDGET_ALERTS:
            for note in ("spend", "limit", "usage"):
                assert "{{" in notes[note], f"{name} lacks the {note} annotation"
            assert "$labels.budget" in notes["description"]


# The template action that writes an amount followed by its currency, and the last
# function of its pipeline: `{{ ... | printf "%.2f" }}{{ end }} {{ $labels.currency }}`.
AMOUNT = re.compile(
    r"\|\s*([^|{}]*?)\s*\}\}(?:\{\{\s*end\s*\}\})?\s*\{\{\s*\$labels\.currency\s*\}\}"
)


@pytest.mark.parametrize("name", sorted(BUDGET_ALERTS))
def test_money_is_written_as_money(name: str) -> None:
    """Every amount has two decimals and no SI prefix: 2030.00 USD, never 2.03k USD."""
    for rule in alert_rules(name):
        notes = rule["annotations"]
        for note in ("description", "spend", "limit"):
            formats = AMOUNT.findall(notes[note])
            assert formats, f"{name}: no amount in its {note} annotation"
            assert set(formats) == {'printf "%.2f"'}, f"{name} {note}: {formats}"


def test_runbook_has_a_section_per_alert() -> None:
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", line[3:].strip().lower()).replace(" ", "-")
        for line in RUNBOOK.read_text().splitlines()
        if line.startswith("## ")
    }
    missing = {name.lower() for name in SEVERITIES} - anchors
    assert not missing, f"docs/runbook.md has no section for {sorted(missing)}"


def test_every_alert_has_cases_that_fire_and_cases_that_stay_silent() -> None:
    fires: set[str] = set()
    silent: set[str] = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (fires if check.get("exp_alerts") else silent).add(check["alertname"])
    assert fires >= set(SEVERITIES), f"no firing case for {sorted(set(SEVERITIES) - fires)}"
    assert silent >= set(SEVERITIES), f"no silent case for {sorted(set(SEVERITIES) - silent)}"


def test_recording_rules_are_named_and_tested() -> None:
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    assert recorded
    for name in recorded:
        assert re.fullmatch(r"[a-z][a-z0-9_]*:[a-z][a-z0-9_]*:[a-z][a-z0-9_]*", name), name
    tested = {
        check["expr"]
        for path in RULE_TESTS
        for case in yaml.safe_load(path.read_text())["tests"]
        for check in case.get("promql_expr_test", [])
    }
    assert recorded <= tested, f"no promql_expr_test for {sorted(recorded - tested)}"


PERIOD_ENDS = "period:budget_period_end_timestamp_seconds:utc"


def period_ends(at: datetime) -> dict[str, int]:
    """The ends of the UTC day, month, quarter and year holding ``at``, by Python's calendar."""

    def month_start(year: int, month: int) -> datetime:
        return datetime(year + (month - 1) // 12, (month - 1) % 12 + 1, 1, tzinfo=UTC)

    day = datetime(at.year, at.month, at.day, tzinfo=UTC) + timedelta(days=1)
    quarter = (at.month - 1) // 3 * 3 + 1
    ends = {
        "daily": day,
        "monthly": month_start(at.year, at.month + 1),
        "quarterly": month_start(at.year, quarter + 3),
        "yearly": month_start(at.year + 1, 1),
    }
    return {period: int(end.timestamp()) for period, end in ends.items()}


def calendar_times() -> list[datetime]:
    """The first and last second of every month of a common, a leap, a century leap and a
    century common year, the middle of their days, and the leap days."""
    times = []
    for year in (1999, 2000, 2024, 2100):
        for month in range(1, 13):
            start = datetime(year, month, 1, tzinfo=UTC)
            times += [
                start,
                start + timedelta(days=14, hours=12, minutes=30),
                start - timedelta(seconds=1),
            ]
    times += [
        datetime(year, 2, 28, 23, 59, 59, tzinfo=UTC) + timedelta(seconds=1)
        for year in (2000, 2024, 2100)
    ]
    return times


@needs_promtool
@pytest.mark.parametrize(
    ("old", "new"),
    [
        pytest.param(None, None, id="as-written"),
        pytest.param(" - (year() % 100 == bool 0)", "", id="every-century-a-leap-year"),
        pytest.param(
            "92 * (month() > bool 6)", "91 * (month() > bool 6)", id="short-third-quarter"
        ),
        pytest.param("(days_in_month() - day_of_month())", "30", id="thirty-day-months"),
    ],
)
def test_period_ends_follow_the_utc_calendar(
    tmp_path: Path, old: str | None, new: str | None
) -> None:
    """The recorded period ends, at times across leap and common years, are Python's; the
    check fails on a rule that gets the calendar wrong."""
    (record,) = [rule for rule in rules() if rule.get("record") == PERIOD_ENDS]
    expr = str(record["expr"])
    if old is not None:
        assert old in expr
        expr = expr.replace(old, new or "")
    cases = [
        {
            "expr": expr,
            "eval_time": f"{int(at.timestamp())}s",
            "exp_samples": [
                {"labels": f'{{period="{period}"}}', "value": end}
                for period, end in period_ends(at).items()
            ],
        }
        for at in calendar_times()
    ]
    # The expression itself, at each time: no rules to evaluate on the way to 2100.
    test = {
        "rule_files": [],
        "evaluation_interval": "1d",
        "tests": [{"interval": "1d", "input_series": [], "promql_expr_test": cases}],
    }
    path = tmp_path / "calendar.test.yml"
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    result = run(str(PROMTOOL), "test", "rules", str(path))
    if old is None:
        assert result.returncode == 0, output(result)
    else:
        assert result.returncode != 0 and "FAILED" in result.stdout + result.stderr, output(result)


# -- Alertmanager --------------------------------------------------------------------


@needs_amtool
def test_amtool_check_config() -> None:
    result = run(str(AMTOOL), "check-config", str(AM_CONFIG))
    assert result.returncode == 0, output(result)
    assert "SUCCESS" in result.stdout


@needs_amtool
def test_amtool_rejects_a_broken_template(tmp_path: Path) -> None:
    shutil.copytree(AM_DIR, tmp_path / "alertmanager")
    (tmp_path / "alertmanager" / "templates" / "broken.tmpl").write_text(
        '{{ define "broken" }}{{ if }}{{ end }}'
    )
    result = run(str(AMTOOL), "check-config", str(tmp_path / "alertmanager" / "alertmanager.yml"))
    assert result.returncode != 0, output(result)


@needs_amtool
@pytest.mark.parametrize(
    ("labels", "receivers"),
    [
        (["alertname=BudgetStop", "severity=critical", "budget=global"], "webhook,email,slack"),
        (["alertname=BudgetExceeded", "severity=critical", "budget=global"], "webhook,email,slack"),
        (["alertname=BudgetExporterDown", "severity=critical"], "webhook,email,slack"),
        (["alertname=BudgetWarning", "severity=warning", "budget=global"], "slack"),
        (["alertname=BudgetSourceDown", "severity=warning", "source=openai"], "slack"),
        (["alertname=SomethingElse"], "slack"),
    ],
)
def test_routing(labels: list[str], receivers: str) -> None:
    result = run(str(AMTOOL), "config", "routes", "test", f"--config.file={AM_CONFIG}", *labels)
    assert result.returncode == 0, output(result)
    assert result.stdout.strip() == receivers


def test_inhibit_rules_and_secret_files() -> None:
    config = yaml.safe_load(AM_CONFIG.read_text())
    inhibit = config["inhibit_rules"]
    for rule in inhibit:
        assert rule["equal"] == ["budget"]
        # Without it, two alerts lacking a budget label would count as equal.
        assert 'budget!=""' in rule["source_matchers"]
    pairs = {(tuple(r["source_matchers"]), tuple(r["target_matchers"])) for r in inhibit}
    assert (
        ('alertname=~"BudgetStop|BudgetExceeded"', 'budget!=""'),
        ('alertname=~"BudgetWarning|BudgetForecastOverrun"',),
    ) in pairs
    assert (('alertname="BudgetExceeded"', 'budget!=""'), ('alertname="BudgetStop"',)) in pairs
    receivers = {r["name"]: r for r in config["receivers"]}
    slack = receivers["slack"]["slack_configs"][0]
    mail = receivers["email"]["email_configs"][0]
    assert "api_url_file" in slack and "api_url" not in slack
    assert "auth_password_file" in mail and "auth_password" not in mail
    assert "slack_api_url" not in config["global"] and "smtp_auth_password" not in config["global"]
